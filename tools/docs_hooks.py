"""MkDocs hooks (``hooks:`` in mkdocs.yml) that generate the site's pages at build time.

* ``index.md``: the README (links into the repository rewritten to site pages where there is one).
* ``estimators.md`` tables: ``reference/registry.md`` is written from ``dg.families()`` and
  ``dg.estimators()``, so a newly registered estimator or family appears with no doc edit.
* ``experiments/<dir>/``: every directory under ``results/``: its README (or a generated index),
  its report (``report/report.md``, images included) and its other markdown pages.
* ``api/<module>.md``: one mkdocstrings page per public module of the package (found by walking
  it, so a new module appears too).

The nav of mkdocs.yml lists the hand-written pages; :func:`on_config` appends the generated
sections. Nothing here writes into the repository: generated pages live in the build only.
"""

from __future__ import annotations

import importlib
import pkgutil
import re
from pathlib import Path
from typing import Any

from mkdocs.structure.files import File, Files

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "results"
PACKAGE = "discretegrad"
ASSETS = (".png", ".svg", ".jpg")


# ----------------------------------------------------------------------------- API modules

def public_modules() -> list[str]:
    """Every module of the package with no private (``_``) component, the package first."""
    pkg = importlib.import_module(PACKAGE)
    names = [PACKAGE]
    for info in pkgutil.walk_packages(pkg.__path__, prefix=PACKAGE + "."):
        if not any(part.startswith("_") for part in info.name.split(".")[1:]):
            names.append(info.name)
    return sorted(names, key=lambda n: (n.count("."), n))


def _api_path(module: str) -> str:
    return "api/" + (module.replace(".", "/") if module != PACKAGE else PACKAGE + "/index") + ".md"


def _api_page(module: str) -> str:
    return f"# `{module}`\n\n::: {module}\n"


# ----------------------------------------------------------------------------- registry tables

def _public_name(fn: Any) -> str | None:
    """``module.attr`` under which ``fn`` is a public, documented member of its module."""
    try:
        mod = importlib.import_module(fn.__module__)
    except (ImportError, AttributeError, TypeError):
        return None
    if any(part.startswith("_") for part in mod.__name__.split(".")):
        return None
    public = getattr(mod, "__all__", None)
    for attr, value in vars(mod).items():
        if value is fn and not attr.startswith("_") and (public is None or attr in public):
            return f"{mod.__name__}.{attr}"
    return None


def _cell(text: object) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def registry_page() -> str:
    import discretegrad as dg
    from discretegrad.registry import REQUIRED

    out = ["# Estimator registry",
           "Generated from the registry when the site is built (`dg.families()`, `dg.estimators()`): "
           "a new `@dg.register(...)` estimator or family appears here with no edit. "
           "`discretegrad list` prints the same. The maths of each estimator is in "
           "[Estimators](../estimators.md) and [Structured variables](../structured.md).",
           ""]
    for name in dg.families():
        fam = dg.get_family(name)
        params = ", ".join(f"`{p.name}`" for p in fam.params)
        options = ", ".join(f"`{k}`" + ("" if v is REQUIRED else f" = `{v!r}`") for k, v in fam.option_defaults().items())
        out.append(f"## `{name}`")
        out.append(f"Parameters: {params}" + (f"; options: {options}" if options else "") +
                   f"; event dimensions: {fam.event_ndim}.")
        rows = ["| estimator | kind | hyperparameters (defaults) | unbiased | relaxed | min samples | what | reference |",
                "|---|---|---|---|---|---|---|---|"]
        for spec in dg.estimators(name):
            target = _public_name(spec.fn)
            shown = f"[`{spec.name}`][{target}]" if target else f"`{spec.name}`"
            hps = ", ".join(f"`{k}`" if v is REQUIRED else f"`{k}={v!r}`" for k, v in spec.hyperparameters.items())
            rows.append("| " + " | ".join([
                shown, "op" if spec.kind == "op" else "surrogate (needs `f`)", _cell(hps or "–"),
                "yes" if spec.unbiased else "no", "yes" if spec.relaxed else "no", str(spec.min_samples),
                _cell(spec.summary or "–"), _cell(spec.reference or "–")]) + " |")
        out.append("\n".join(rows))
        out.append("")
    return "\n\n".join(out)


# ----------------------------------------------------------------------------- results

def _demote(md: str) -> str:
    """One heading level down (a report included under a page's own title)."""
    return re.sub(r"^(#{1,5}) ", r"#\1 ", md, flags=re.M)


def _prefix_images(md: str, prefix: str) -> str:
    return re.sub(r"(!\[[^\]]*\]\()(?!https?:|/)([^)]+\))", lambda m: m.group(1) + prefix + m.group(2), md)


def result_pages() -> dict[str, str | bytes | Path]:
    """site path -> content (text) or source file, for every directory under results/."""
    pages: dict[str, str | bytes | Path] = {}
    if not RESULTS.is_dir():
        return pages
    for d in sorted(p for p in RESULTS.iterdir() if p.is_dir()):
        base = f"experiments/{d.name}"
        readme = d / "README.md"
        body = readme.read_text() if readme.is_file() else f"# {d.name}\n"
        report = d / "report" / "report.md"
        if report.is_file():
            body += "\n\n" + _prefix_images(_demote(report.read_text()), "report/")
        others = sorted(p for p in d.glob("*.md") if p.name != "README.md")
        if others and not readme.is_file():
            body += "\n\n" + "\n".join(f"- [{p.stem}]({p.name})" for p in others)
        pages[f"{base}/index.md"] = body
        for p in others:
            pages[f"{base}/{p.name}"] = p.read_text()
        for p in sorted(d.rglob("*")):
            if p.suffix.lower() in ASSETS and p.is_file():
                pages[f"{base}/{p.relative_to(d).as_posix()}"] = p
    return pages


def _readme_page() -> str:
    text = (ROOT / "README.md").read_text()
    # repository paths that are pages of this site become links
    for src, dest in (("docs/ARCHITECTURE.md", "ARCHITECTURE.md"), ("docs/estimators.md", "estimators.md"),
                      ("docs/structured.md", "structured.md")):
        text = text.replace(f"`{src}`", f"[`{src}`]({dest})")
    return text


# ----------------------------------------------------------------------------- hooks

def _generated() -> dict[str, str | bytes | Path]:
    pages: dict[str, str | bytes | Path] = {"index.md": _readme_page(), "reference/registry.md": registry_page()}
    pages.update(result_pages())
    for module in public_modules():
        pages[_api_path(module)] = _api_page(module)
    return pages


def _api_nav() -> list[Any]:
    """The package and its plain modules first, then one section per subpackage."""
    core: list[Any] = []
    sections: dict[str, list[Any]] = {}
    for module in public_modules():
        parts = module.split(".")
        if module == PACKAGE:
            core.append({PACKAGE: _api_path(module)})
        elif len(parts) == 2 and not hasattr(importlib.import_module(module), "__path__"):
            core.append({parts[1]: _api_path(module)})
        else:
            sections.setdefault(parts[1], []).append({".".join(parts[1:]): _api_path(module)})
    return core + [{name: pages} for name, pages in sections.items()]


def on_config(config: Any, **_: Any) -> Any:
    nav = list(config.nav or [])
    experiments = []
    for d in sorted(p for p in RESULTS.iterdir() if p.is_dir()):
        others = [{p.stem: f"experiments/{d.name}/{p.name}"} for p in sorted(d.glob("*.md")) if p.name != "README.md"]
        index = f"experiments/{d.name}/index.md"
        experiments.append({d.name: [{"overview": index}, *others]} if others else {d.name: index})
    nav += [{"Estimator registry": "reference/registry.md"}, {"Experiments": experiments},
            {"API reference": _api_nav()}]
    config.nav = nav
    return config


def on_files(files: Files, config: Any, **_: Any) -> Files:
    for path, content in _generated().items():
        existing = files.get_file_from_path(path)
        if existing is not None:
            files.remove(existing)
        if isinstance(content, Path):
            files.append(File.generated(config, path, abs_src_path=str(content)))
        else:
            files.append(File.generated(config, path, content=content))
    return files
