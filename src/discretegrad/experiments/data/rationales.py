"""Aspect-rating reviews with annotated rationales: the user-supplied file format, its loader, and
a generated fixture whose true rationales are known.

The BeerAdvocate data of the SST paper's L2X table (McAuley et al. 2012, with the rationale
annotations of Lei et al. 2016) is not redistributable, so the pipeline reads a directory that
the user supplies::

    DIR/train.jsonl   DIR/valid.jsonl   DIR/test.jsonl

one review per line, a JSON object with

* ``"x"``: the review as a list of tokens (non-empty strings; tokenise and lower-case beforehand);
* ``"y"``: the aspect ratings, a list of numbers in ``[0, 1]``, the same number ``A`` of aspects
  on every line of every split (BeerAdvocate: appearance, aroma, palate, taste, overall; a
  0-5 star rating divided by 5);
* ``"0"``, ``"1"``, ... (optional; required in ``test.jsonl`` for the evaluated aspect): the
  annotated rationale of aspect ``a`` as a list of token spans ``[start, end]`` (0-based,
  end-exclusive, ``0 <= start < end <= len(x)``), e.g. one span per annotated sentence.

This is the layout of Lei et al.'s ``annotations.json`` (keys ``x``, ``y`` and the aspect
indices), which we recall but could not check against the file; the training files of that
release are plain text and need converting into it. Any file that breaks a rule is refused with
one message naming the file, the line and the rule.

The fixture (:func:`make_fixture`, :func:`write_fixture`) is built so that contiguity decides.
Every aspect has its own polar words (:data:`ASPECT_WORDS`: positive and negative). A review
holds, per aspect, one planted phrase of :data:`SENTENCE` of that aspect's words, each positive
with probability ``b_a ~ U(0, 1)`` drawn per review and aspect, and :data:`DISTRACTORS` short runs
of :data:`RUN` words of the same aspect, drawn the same way with a probability of their own,
``U(0, 1)`` per run (sentiment that rates nothing). The pieces come in random order, separated by :data:`GAP` filler
words. Aspect ``a``'s rating is the fraction of positive words of its phrase and its rationale
is the phrase's span. Every word of a phrase also occurs in the random runs, and so does every
width-3 window of a phrase word, with the same law (a run of :data:`RUN` = 4 holds both the
windows of a phrase's interior and those of its edges, and its polarities agree as much as a
phrase's), so a selector that scores words one at a time from local context cannot tell the
phrase from the runs: the runs hold as many interior windows as the phrase, so about half of its
picks fall outside the phrase. Only length tells them apart: ``k``
contiguous words of the aspect, for ``k > RUN``, fit in the phrase alone, which a
chain-structured selection (correlated top-k, with pair scores for adjacent words) can express.
Scattered picks of the aspect's words mix the rating with coin flips.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path

import torch

__all__ = ["Review", "parse_reviews", "load_reviews", "load_rationale_dir", "Vocabulary", "encode",
           "make_fixture", "fixture_splits", "write_fixture", "SPLITS", "SENTENCE", "RUN", "DISTRACTORS", "ASPECT_WORDS"]

SPLITS = ("train", "valid", "test")
SENTENCE = 12
"""Tokens of a planted aspect phrase (its rationale)."""
RUN = 4
"""Tokens of a random run of an aspect's words: fewer than every ``k`` of the grid (5, 10, 15)."""
DISTRACTORS = 5
"""Random runs per aspect and review: ``DISTRACTORS * (RUN - 2)`` interior windows, as many as the
phrase's ``SENTENCE - 2``."""
GAP = (1, 3)
"""Filler words before, between and after the pieces: uniform in this range."""
ASPECT_WORDS = (  # (positive, negative) words of each aspect
    (("golden", "amber", "clear", "bright", "creamy", "lacing"),
     ("murky", "cloudy", "pale", "hazy", "dull", "patchy")),
    (("fragrant", "floral", "fruity", "piney", "spicy", "fresh"),
     ("stale", "musty", "skunky", "faint", "papery", "cardboard")),
    (("rich", "smooth", "crisp", "balanced", "malty", "juicy"),
     ("bland", "watery", "thin", "harsh", "metallic", "astringent")),
)
_FILLER = ("the", "a", "it", "is", "with", "and", "of", "some", "quite", "very", "bit", "this", "beer", "glass",
           "pour", "one", "but", "there", "in", "too", "really", "rather", "fairly", "just", "hint", "note", "more",
           "than", "expected", "here", "overall", "still", "also", "much", "light", "head", "body", "finish",
           "bottle", "first")


@dataclasses.dataclass(frozen=True)
class Review:
    """One review: tokens, ratings ``[A]`` and per aspect its rationale spans (``None``: not annotated)."""

    tokens: tuple[str, ...]
    ratings: tuple[float, ...]
    spans: tuple[tuple[tuple[int, int], ...] | None, ...]


def _fail(source: str, line: int, what: str, got: object) -> ValueError:
    text = repr(got)
    return ValueError(f"Expected {source} line {line} to have {what}, but got {text[:80] + '...' if len(text) > 80 else text}")


def _spans(source: str, line: int, key: str, value: object, n: int) -> tuple[tuple[int, int], ...]:
    if not isinstance(value, list):
        raise _fail(source, line, f"a list of [start, end] spans under {key!r}", value)
    out = []
    for span in value:
        ok = (isinstance(span, list) and len(span) == 2
              and all(isinstance(v, int) and not isinstance(v, bool) for v in span))
        if not ok or not 0 <= span[0] < span[1] <= n:
            raise _fail(source, line, f"spans [start, end] with 0 <= start < end <= {n} (the number of tokens) "
                        f"under {key!r}", span)
        out.append((span[0], span[1]))
    return tuple(out)


def parse_reviews(lines: Iterable[str], source: str = "<reviews>") -> list[Review]:
    """Parse JSON lines in the documented format (blank lines skipped); one ``ValueError`` per problem."""
    reviews: list[Review] = []
    n_aspects = None
    for number, text in enumerate(lines, 1):
        if not text.strip():
            continue
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as e:
            raise _fail(source, number, f"one JSON object ({e.msg})", text.strip()) from None
        if not isinstance(obj, dict):
            raise _fail(source, number, "a JSON object", obj)
        tokens = obj.get("x")
        if not isinstance(tokens, list) or not tokens or not all(isinstance(t, str) and t for t in tokens):
            raise _fail(source, number, 'a non-empty list of non-empty token strings under "x"', tokens)
        ratings = obj.get("y")
        if (not isinstance(ratings, list) or not ratings
                or not all(isinstance(r, (int, float)) and not isinstance(r, bool) and math.isfinite(r)
                           and 0 <= r <= 1 for r in ratings)):
            raise _fail(source, number, 'a non-empty list of ratings in [0, 1] under "y"', ratings)
        if n_aspects is None:
            n_aspects = len(ratings)
        elif len(ratings) != n_aspects:
            raise _fail(source, number, f"{n_aspects} ratings (as the first review)", ratings)
        extra = sorted(set(obj) - {"x", "y"} - {str(a) for a in range(n_aspects)})
        if extra:
            raise _fail(source, number, f'only the keys "x", "y" and aspect indices 0..{n_aspects - 1}', extra)
        spans = tuple(_spans(source, number, str(a), obj[str(a)], len(tokens)) if str(a) in obj else None
                      for a in range(n_aspects))
        reviews.append(Review(tuple(tokens), tuple(float(r) for r in ratings), spans))
    if not reviews:
        raise ValueError(f"Expected {source} to hold at least one review, but got none")
    return reviews


def load_reviews(path: str | Path) -> list[Review]:
    """Read and parse one JSON-lines file (:func:`parse_reviews`)."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"Expected a reviews file at {str(path)!r}, but got no such file")
    with path.open(encoding="utf-8") as fh:
        return parse_reviews(fh, source=str(path))


def load_rationale_dir(root: str | Path, aspect: int) -> dict[str, list[Review]]:
    """The three splits of ``root``, checked for one aspect count and test rationales of ``aspect``."""
    splits = {s: load_reviews(Path(root) / f"{s}.jsonl") for s in SPLITS}
    counts = {s: len(r[0].ratings) for s, r in splits.items()}
    if len(set(counts.values())) != 1:
        raise ValueError(f"Expected the same number of aspects in every split of {str(root)!r}, but got {counts}")
    if not 0 <= aspect < counts["test"]:
        raise ValueError(f"Expected aspect in [0, {counts['test'] - 1}], but got {aspect}")
    if not any(r.spans[aspect] for r in splits["test"]):
        raise ValueError(f"Expected rationale spans of aspect {aspect} in {str(Path(root) / 'test.jsonl')!r}, "
                         f"but got none")
    return splits


class Vocabulary:
    """Token ids: 0 = padding, 1 = unknown, then the training tokens seen ``min_count`` times, by frequency."""

    def __init__(self, reviews: Sequence[Review], min_count: int = 1):
        counts = Counter(t for r in reviews for t in r.tokens)
        words = sorted((w for w, c in counts.items() if c >= min_count), key=lambda w: (-counts[w], w))
        self.index = {w: i + 2 for i, w in enumerate(words)}

    def __len__(self) -> int:
        return len(self.index) + 2

    def ids(self, tokens: Sequence[str]) -> list[int]:
        return [self.index.get(t, 1) for t in tokens]


def encode(reviews: Sequence[Review], vocab: Vocabulary, aspect: int, max_len: int):
    """``(ids long [N, L], valid bool [N, L], ratings [N], rationale bool [N, L])``, truncated to ``max_len``."""
    length = min(max_len, max(len(r.tokens) for r in reviews))
    ids = torch.zeros(len(reviews), length, dtype=torch.long)
    rationale = torch.zeros(len(reviews), length, dtype=torch.bool)
    for i, r in enumerate(reviews):
        row = vocab.ids(r.tokens[:length])
        ids[i, :len(row)] = torch.tensor(row)
        for start, end in r.spans[aspect] or ():
            rationale[i, start:min(end, length)] = True
    ratings = torch.tensor([r.ratings[aspect] for r in reviews])
    return ids, ids > 0, ratings, rationale


def make_fixture(n: int, generator: torch.Generator) -> list[dict]:
    """``n`` reviews of the fixture (module docstring) as JSON-ready records of the file format."""
    def words(aspect: int, count: int, p_positive: float) -> list[str]:
        positive, negative = ASPECT_WORDS[aspect]
        good = (torch.rand(count, generator=generator) < p_positive).tolist()
        picks = torch.randint(len(positive), (count,), generator=generator).tolist()
        return [(positive if g else negative)[i] for g, i in zip(good, picks)]

    def gap() -> list[str]:
        size = int(torch.randint(GAP[0], GAP[1] + 1, (), generator=generator))
        return [_FILLER[i] for i in torch.randint(len(_FILLER), (size,), generator=generator).tolist()]

    n_aspects = len(ASPECT_WORDS)
    pieces = [(a, 0) for a in range(n_aspects)] + [(a, RUN) for a in range(n_aspects) for _ in range(DISTRACTORS)]
    records = []
    for _ in range(n):
        biases = torch.rand(n_aspects, generator=generator).tolist()
        tokens, record, ratings = gap(), {}, [0.0] * n_aspects
        for piece in torch.randperm(len(pieces), generator=generator).tolist():
            a, run = pieces[piece]
            if run:
                tokens += words(a, run, float(torch.rand((), generator=generator)))
            else:  # the aspect's phrase: its rationale and its rating
                phrase = words(a, SENTENCE, biases[a])
                record[str(a)] = [[len(tokens), len(tokens) + SENTENCE]]
                ratings[a] = round(sum(w in ASPECT_WORDS[a][0] for w in phrase) / SENTENCE, 6)
                tokens += phrase
            tokens += gap()
        records.append({"x": tokens, "y": ratings, **dict(sorted(record.items()))})
    return records


def fixture_splits(sizes: Sequence[int], seed: int) -> dict[str, list[dict]]:
    """The fixture's three splits (``sizes``: reviews of train, valid, test), each split from its own stream."""
    return {split: make_fixture(n, torch.Generator().manual_seed(seed * 1000 + i))
            for i, (split, n) in enumerate(zip(SPLITS, sizes))}


def write_fixture(root: str | Path, sizes: Sequence[int], seed: int) -> Path:
    """Write :func:`fixture_splits` as ``root/{train,valid,test}.jsonl``; return ``root``."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    for split, records in fixture_splits(sizes, seed).items():
        lines = [json.dumps(r, separators=(",", ":")) for r in records]
        (root / f"{split}.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return root
