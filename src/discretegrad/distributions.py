"""``torch.distributions``-compatible objects, one per family, with a gradient estimator for ``rsample``.

>>> q = dg.Categorical(logits=logits, estimator="gst", tau=0.5, gap=1.0)
>>> z = q.rsample()                  # one-hot sample, GST gradient into logits
>>> kl = torch.distributions.kl_divergence(q, dg.Categorical(logits=torch.zeros_like(logits))).sum(-1)

Each class subclasses ``torch.distributions.Distribution`` through
:class:`~discretegrad._distribution.DiscreteDistribution`: its law is the registered family's
(``sample``, ``log_prob``, ``mean``, ``entropy`` in closed form or by enumeration), its ``rsample``
the registered drop-in op of ``estimator`` with the hyperparameters given to the constructor
(``tau=``, ``gap=``, ...), so ``q.rsample(generator=g)`` is ``dg.get_estimator(estimator,
distribution=...).fn(logits, generator=g, **hparams)`` for the same generator state.
Score-function estimators (``reinforce``, ``rloo``, ...) need the cost function: ``rsample``
refuses them and names :func:`discretegrad.surrogate`; ``sample``/``log_prob`` still work.

Samples have the families' layouts: ``Categorical`` samples are **one-hot** (event shape
``[N]``, as ``torch.distributions.OneHotCategorical``: the gradient flows through the one-hot
vector), ``TopK`` samples k-hot vectors, the trees ``[n, n]`` adjacency matrices. ``probs=`` is
validated (entries in [0, 1], summing to 1 for categorical) and turned into logits; a zero
categorical probability is a masked category (logit ``-inf``). ``kl_divergence`` is registered
in closed form between two objects of one family (categorical, Bernoulli, Poisson, binomial)
and to the matching ``torch.distributions`` prior (``OneHotCategorical``/``Categorical``,
``Bernoulli(0.5)``, ``Poisson``).
"""

from __future__ import annotations

import math

import torch
import torch.distributions as td
import torch.nn.functional as F
from torch.distributions import constraints
from torch.distributions.utils import probs_to_logits

from discretegrad import structures as S
from discretegrad._distribution import MAX_ENUMERATION, DiscreteDistribution, KHot, Trees, check_probs, one_of
from discretegrad._distribution import resolve_validate as _validate
from discretegrad._distribution import xlogy_logspace
from discretegrad.family import Family
from discretegrad.poisson import upper_bound
from discretegrad.registry import families, get_family

__all__ = ["Arborescence", "Bernoulli", "Binomial", "CLASSES", "Categorical", "DiscreteDistribution", "Family",
           "MAX_ENUMERATION", "Poisson", "SpanningTree", "TopK", "families", "get_distribution", "make"]


def get_distribution(name: str) -> Family:
    """The family called ``name``; ``ValueError`` listing the known names otherwise."""
    return get_family(name)


# ----------------------------------------------------------------------------- categorical, Bernoulli

class _Logits:
    """``logits``: the parameter as given."""

    _param: torch.Tensor

    @property
    def logits(self) -> torch.Tensor:
        return self._param


class _BinaryLogits(_Logits):
    """Log-odds parameters (Bernoulli, binomial): ``probs = σ(logits)``, ``p(1-p)`` in log space."""

    @property
    def probs(self) -> torch.Tensor:
        return torch.sigmoid(self._param)

    def _pq(self) -> torch.Tensor:
        return torch.exp(F.logsigmoid(self._param) + F.logsigmoid(-self._param))


def _binary_logits(probs: object, logits: object, validate_args: object) -> object:
    """The log-odds from exactly one of ``probs`` (checked, clamped to ``[eps, 1 - eps]``) or ``logits``."""
    one_of(probs, logits)
    if probs is None:
        return logits
    return probs_to_logits(check_probs(probs, simplex=False, validate=_validate(validate_args)), is_binary=True)


class Categorical(DiscreteDistribution):
    """Categorical over ``N`` classes (last dim) with one-hot samples; ``-inf`` logits mask classes.

    ``Categorical(probs=None, logits=None, *, estimator="stgs", validate_args=None, **hparams)``;
    ``hparams`` are the estimator's (``tau``, ``gap``, ``mc_samples``, ...).
    """

    family_name = "categorical"
    arg_constraints = {"probs": constraints.simplex, "logits": constraints.real_vector}
    support = constraints.one_hot
    has_enumerate_support = True

    def __init__(self, probs: torch.Tensor | None = None, logits: torch.Tensor | None = None, *,
                 estimator: str = "stgs", validate_args: bool | None = None, **hparams: object) -> None:
        one_of(probs, logits)
        if probs is not None:
            p = check_probs(probs, simplex=True, validate=_validate(validate_args))
            logits = torch.log(p)  # a zero probability is a masked category (-inf)
        super().__init__(logits, estimator=estimator, options={}, hparams=hparams, validate_args=validate_args)

    @property
    def logits(self) -> torch.Tensor:
        """Normalised log-probabilities (``-inf`` for masked classes)."""
        return torch.log_softmax(self._param, -1)

    @property
    def probs(self) -> torch.Tensor:
        return torch.softmax(self._param, -1)

    @property
    def mode(self) -> torch.Tensor:
        index = self._param.argmax(-1)
        return (index.unsqueeze(-1) == torch.arange(self._param.shape[-1], device=index.device)).to(self._param.dtype)

    @property
    def variance(self) -> torch.Tensor:
        return self.probs * (1 - self.probs)

    def entropy(self) -> torch.Tensor:
        return -xlogy_logspace(self.logits).sum(-1)


class Bernoulli(_BinaryLogits, DiscreteDistribution):
    """Bernoulli with samples in {0, 1}; ``Bernoulli(probs=None, logits=None, *, estimator="stgs", ...)``.

    ``probs`` are clamped to ``[eps, 1 - eps]`` when turned into logits (as ``torch.distributions``).
    """

    family_name = "bernoulli"
    arg_constraints = {"probs": constraints.unit_interval, "logits": constraints.real}
    support = constraints.boolean
    has_enumerate_support = True

    def __init__(self, probs: torch.Tensor | None = None, logits: torch.Tensor | None = None, *,
                 estimator: str = "stgs", validate_args: bool | None = None, **hparams: object) -> None:
        logits = _binary_logits(probs, logits, validate_args)
        super().__init__(logits, estimator=estimator, options={}, hparams=hparams, validate_args=validate_args)

    @property
    def mode(self) -> torch.Tensor:
        """``1[logits > 0]`` (0 at the tie ``p = 1/2``)."""
        return (self._param > 0).to(self._param.dtype)

    @property
    def variance(self) -> torch.Tensor:
        return self._pq()

    def entropy(self) -> torch.Tensor:
        log_p, log_q = F.logsigmoid(self._param), F.logsigmoid(-self._param)
        return -(log_p.exp() * log_p + log_q.exp() * log_q)


# ----------------------------------------------------------------------------- counts

class Poisson(DiscreteDistribution):
    """Poisson with rate ``λ > 0``; ``Poisson(rate, *, estimator="st", validate_args=None, **hparams)``.

    ``entropy`` sums over the family's truncated support (all but ``1e-10`` of the mass, see
    :mod:`discretegrad.poisson`); the support is infinite, so there is no ``enumerate_support``.
    """

    family_name, param_name = "poisson", "rate"
    _no_enumeration = "its support is infinite"
    arg_constraints = {"rate": constraints.positive}
    support = constraints.nonnegative_integer

    def __init__(self, rate: torch.Tensor, *, estimator: str = "st", validate_args: bool | None = None,
                 **hparams: object) -> None:
        super().__init__(rate, estimator=estimator, options={}, hparams=hparams, validate_args=validate_args)

    @property
    def rate(self) -> torch.Tensor:
        return self._param

    @property
    def mode(self) -> torch.Tensor:
        return self._param.floor()

    @property
    def variance(self) -> torch.Tensor:
        return self._param

    def _support_size(self) -> int:
        return upper_bound(float(self._param.detach().max())) + 1 if self._param.numel() else 1


class Binomial(_BinaryLogits, DiscreteDistribution):
    """Binomial with ``total_count`` trials: ``Binomial(total_count, probs=None, logits=None, *, estimator="st", ...)``."""

    family_name = "binomial"
    arg_constraints = {"probs": constraints.unit_interval, "logits": constraints.real}
    has_enumerate_support = True

    def __init__(self, total_count: int, probs: torch.Tensor | None = None, logits: torch.Tensor | None = None, *,
                 estimator: str = "st", validate_args: bool | None = None, **hparams: object) -> None:
        logits = _binary_logits(probs, logits, validate_args)
        super().__init__(logits, estimator=estimator, options={"total_count": total_count}, hparams=hparams,
                         validate_args=validate_args)

    @property
    def total_count(self) -> int:
        return self._options["total_count"]

    @property
    def support(self) -> constraints.Constraint:  # type: ignore[override]
        return constraints.integer_interval(0, self.total_count)

    @property
    def mode(self) -> torch.Tensor:
        return ((self.total_count + 1) * self.probs).floor().clamp(max=self.total_count)

    @property
    def variance(self) -> torch.Tensor:
        return self.total_count * self._pq()

    def _support_size(self) -> int:
        return self.total_count + 1


# ----------------------------------------------------------------------------- structures

class TopK(_Logits, DiscreteDistribution):
    """k-subsets of ``n`` items under the Gumbel-top-k law (sampling ``k`` without replacement from
    ``softmax(logits)``), k-hot samples. ``TopK(k, probs=None, logits=None, *, estimator="entropy", ...)``.

    ``mode`` is the ``k`` largest logits, the most likely subset (exchanging an item for a larger
    one raises every Plackett-Luce term of the set's probability). ``entropy``, ``mean`` and
    ``log_prob`` enumerate (``C(n, k) <= MAX_ENUMERATION``; ``log_prob`` sums over ``k!`` orderings).
    A ``-inf`` logit masks an item: never selected, zero gradient; every row
    needs ``k`` unmasked items.
    """

    family_name = "topk"
    arg_constraints = {"probs": constraints.simplex, "logits": constraints.real_vector}
    has_enumerate_support = True

    def __init__(self, k: int, probs: torch.Tensor | None = None, logits: torch.Tensor | None = None, *,
                 estimator: str = "entropy", validate_args: bool | None = None, **hparams: object) -> None:
        one_of(probs, logits)
        if probs is not None:
            p = check_probs(probs, simplex=True, validate=_validate(validate_args))
            logits = torch.log(p.clamp_min(torch.finfo(p.dtype).tiny))
        super().__init__(logits, estimator=estimator, options={"k": k}, hparams=hparams, validate_args=validate_args)

    @property
    def k(self) -> int:
        return self._options["k"]

    @property
    def support(self) -> constraints.Constraint:  # type: ignore[override]
        return KHot(self.k)

    @property
    def probs(self) -> torch.Tensor:
        return torch.softmax(self._param, -1)

    @property
    def mode(self) -> torch.Tensor:
        return S.topk_hard(self._param.detach(), self.k)

    def _support_size(self) -> int:
        return math.comb(self._param.shape[-1], self.k)


class SpanningTree(_Logits, DiscreteDistribution):
    """Undirected spanning trees of ``K_n`` sampled by perturb-and-Kruskal (symmetric ``logits [..., n, n]``).

    ``SpanningTree(logits, *, estimator="entropy", validate_args=None, **hparams)``. ``log_prob``,
    ``entropy``, ``mean`` and ``enumerate_support`` use the exact law of the Kruskal sample
    (``n <= 5``, :data:`discretegrad.trees.MAX_LAW_VERTICES`). ``mode`` is the maximum spanning tree
    of the logits (the MAP tree); that it is the most likely tree of the sampling law was checked by
    enumeration on random graphs (``n = 4, 5``; ``tests/test_distributions.py``), not proven.
    """

    family_name = "spanning_tree"
    arg_constraints = {"logits": constraints.real}
    support = Trees()
    has_enumerate_support = True

    def __init__(self, logits: torch.Tensor, *, estimator: str = "entropy", validate_args: bool | None = None,
                 **hparams: object) -> None:
        super().__init__(logits, estimator=estimator, options={}, hparams=hparams, validate_args=validate_args)

    @property
    def mode(self) -> torch.Tensor:
        x = self._param.detach()
        return S.prim(0.5 * (x + x.transpose(-1, -2)))


class Arborescence(_Logits, DiscreteDistribution):
    """Arborescences rooted at ``root`` sampled by perturb-and-Chu-Liu/Edmonds (``logits [..., n, n]``, entry
    ``[i, j]`` = edge ``i -> j``). ``Arborescence(logits, *, root=0, estimator="entropy", ...)``.

    The law of this sample has no closed form, so ``log_prob``, ``entropy``, ``mean`` and
    ``enumerate_support`` raise ``ValueError`` saying so; ``rsample``, ``sample`` and ``mode`` (the
    maximum arborescence of the logits) work.
    """

    family_name = "arborescence"
    arg_constraints = {"logits": constraints.real}

    def __init__(self, logits: torch.Tensor, *, root: int = 0, estimator: str = "entropy",
                 validate_args: bool | None = None, **hparams: object) -> None:
        super().__init__(logits, estimator=estimator, options={"root": root}, hparams=hparams,
                         validate_args=validate_args)

    @property
    def support(self) -> constraints.Constraint:  # type: ignore[override]
        return Trees(self._options["root"])

    @property
    def mode(self) -> torch.Tensor:
        return S.edmonds(self._param.detach(), self._options["root"])

    _no_enumeration = "the law of its sample is not computable (see log_prob)"


CLASSES: dict[str, type[DiscreteDistribution]] = {
    c.family_name: c for c in (Categorical, Bernoulli, Poisson, Binomial, TopK, SpanningTree, Arborescence)}
"""The class of each family, by family name."""


def make(distribution: str, params: torch.Tensor, **kwargs: object) -> DiscreteDistribution:
    """The object of family ``distribution`` at ``params`` (its logits, or rates for Poisson);
    ``kwargs``: ``estimator=``, its hyperparameters and the family's options (``k=``, ``total_count=``)."""
    if distribution not in CLASSES:
        get_family(distribution)  # an unknown name: the registry's message
        raise ValueError(f"Expected distribution to be one of {sorted(CLASSES)}, but got {distribution!r}")
    cls = CLASSES[distribution]
    return cls(**{cls.param_name: params}, **kwargs)  # type: ignore[call-arg]


# ----------------------------------------------------------------------------- KL divergences

def _kl_categorical(log_p: torch.Tensor, log_q: torch.Tensor) -> torch.Tensor:
    """``Σ p (log p - log q)`` from normalised log-probabilities; masked classes of ``p`` contribute 0."""
    present = log_p > -math.inf
    safe = torch.where(present, log_p, 0.0)
    diff = torch.where(present, safe - log_q, 0.0)  # masked first, so no 0 * inf in the backward pass
    return (torch.where(present, safe.exp(), 0.0) * diff).sum(-1)


def _kl_bernoulli(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """KL between Bernoullis of log-odds ``a`` and ``b``, in log space."""
    return (torch.sigmoid(a) * (F.logsigmoid(a) - F.logsigmoid(b))
            + torch.sigmoid(-a) * (F.logsigmoid(-a) - F.logsigmoid(-b)))


def _kl_poisson(rate_p: torch.Tensor, rate_q: torch.Tensor) -> torch.Tensor:
    return rate_p * (torch.log(rate_p) - torch.log(rate_q)) - rate_p + rate_q


@td.register_kl(Categorical, Categorical)
def _kl_cat_cat(p: Categorical, q: Categorical) -> torch.Tensor:
    return _kl_categorical(p.logits, q.logits)


@td.register_kl(Categorical, td.OneHotCategorical)
@td.register_kl(Categorical, td.Categorical)
def _kl_cat_torch(p: Categorical, q: td.Categorical | td.OneHotCategorical) -> torch.Tensor:
    return _kl_categorical(p.logits, q.logits)


@td.register_kl(Bernoulli, Bernoulli)
@td.register_kl(Bernoulli, td.Bernoulli)
def _kl_bern(p: Bernoulli, q: Bernoulli | td.Bernoulli) -> torch.Tensor:
    return _kl_bernoulli(p.logits, q.logits)


@td.register_kl(Poisson, Poisson)
@td.register_kl(Poisson, td.Poisson)
def _kl_pois(p: Poisson, q: Poisson | td.Poisson) -> torch.Tensor:
    return _kl_poisson(p.rate, q.rate)


@td.register_kl(Binomial, Binomial)
def _kl_binom(p: Binomial, q: Binomial) -> torch.Tensor:
    if p.total_count != q.total_count:
        raise ValueError(f"Expected two binomials with the same total_count, but got {p.total_count} and "
                         f"{q.total_count}")
    return p.total_count * _kl_bernoulli(p.logits, q.logits)
