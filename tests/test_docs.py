"""The documentation site builds with ``mkdocs build --strict`` (warnings are errors), has the
pages it promises, and a broken docstring cross-reference fails the build. Skipped when the
``docs`` extra is not installed (``make test`` installs it)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytest.importorskip("mkdocs", reason="the docs extra is not installed: pip install -e '.[docs]'")
pytest.importorskip("mkdocstrings", reason="the docs extra is not installed: pip install -e '.[docs]'")
pytest.importorskip("mkdocstrings_handlers.python", reason="the docs extra is not installed: pip install -e '.[docs]'")

import discretegrad as dg  # noqa: E402
from discretegrad import registry  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tools"))
import docs_hooks  # noqa: E402


def _build(config: Path, site: Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(config), "-d", str(site)],
                          cwd=cwd, capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_site_builds_strict_with_every_page(tmp_path):
    site = tmp_path / "site"
    r = _build(REPO / "mkdocs.yml", site, REPO)
    assert r.returncode == 0, r.stderr[-4000:]
    assert "WARNING" not in r.stderr, r.stderr
    for page in ["index.html", "getting-started/index.html", "estimators/index.html", "structured/index.html",
                 "ARCHITECTURE/index.html", "reference/registry/index.html"]:
        assert (site / page).is_file(), page
    registry_html = (site / "reference/registry/index.html").read_text()
    for spec in dg.estimators():
        assert f"<code>{spec.name}</code>" in registry_html, spec.name
    for d in (p for p in (REPO / "results").iterdir() if p.is_dir()):
        assert (site / "experiments" / d.name / "index.html").is_file(), d.name
    for png in (REPO / "results").rglob("*.png"):
        rel = png.relative_to(REPO / "results")
        assert (site / "experiments" / rel).is_file(), rel
    for module in docs_hooks.public_modules():
        page = site / docs_hooks._api_path(module).removesuffix(".md")
        html = (page / "index.html" if page.name != "index" else page.with_suffix(".html")).read_text()
        assert f'id="{module}"' in html, module
    cat = (site / "api/discretegrad/categorical/index.html").read_text()
    assert 'id="discretegrad.categorical.gst"' in cat and "Gapped straight-through" in cat


def test_registry_page_lists_a_new_estimator_with_no_doc_edit(monkeypatch):
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))

    @dg.register("my_new_op", distribution="categorical", kind="op", unbiased=False, reference="Someone 2030")
    def my_new_op(logits, *, generator=None, tau: float = 0.7):
        """a brand-new estimator."""
        return dg.categorical.st(logits, tau=tau, generator=generator)

    page = docs_hooks.registry_page()
    section = page.split("## `categorical`")[1].split("## `")[0]
    assert "`my_new_op`" in section and "`tau=0.7`" in section and "a brand-new estimator" in section
    assert "Someone 2030" in section
    assert "my_new_op" not in page.split("## `categorical`")[0]


@pytest.mark.slow
def test_a_broken_docstring_reference_fails_the_strict_build(tmp_path):
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "toymod.py").write_text(textwrap.dedent('''
        """A module whose docstring points at [a missing object][toymod.does_not_exist]."""

        def f(x):
            """Identity; see [the module][toymod]."""
            return x
    '''))
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "index.md").write_text("# API\n\n::: toymod\n")
    (tmp_path / "mkdocs.yml").write_text(textwrap.dedent("""
        site_name: toy
        plugins:
          - autorefs
          - mkdocstrings:
              handlers:
                python:
                  paths: [src]
    """))
    r = _build(tmp_path / "mkdocs.yml", tmp_path / "site", tmp_path)
    assert r.returncode != 0 and "does_not_exist" in r.stderr, r.stderr[-2000:]
    (tmp_path / "src" / "toymod.py").write_text('"""Fixed: [f][toymod.f]."""\n\ndef f(x):\n    """Identity."""\n    return x\n')
    r = _build(tmp_path / "mkdocs.yml", tmp_path / "site", tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
