# Two commands set up a fresh machine: `make demo` and `make test`. `make docs` builds the site into site/.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
# torch==2.13.0 is pinned here for this environment (a local CPU wheel); the package metadata keeps a range.
TORCH_PIN ?= torch==2.13.0
STAMP := $(VENV)/.installed

.PHONY: install demo test test-quick docs docs-serve clean

$(BIN)/python:
	$(PY) -m venv $(VENV)

$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/pip install --quiet --disable-pip-version-check "$(TORCH_PIN)"
	$(BIN)/pip install --quiet --disable-pip-version-check -e ".[experiments,ray,dev,docs]"
	touch $(STAMP)

install: $(STAMP)

demo: install
	$(BIN)/discretegrad demo --out results/demo

test: install
	$(BIN)/python -m pytest -q -n 2 --dist loadgroup tests

# the inner loop: everything but the tests marked slow (real CLI processes, kill/resume, longer runs)
test-quick: install
	$(BIN)/python -m pytest -q -n 2 --dist loadgroup -m "not slow" tests

# the documentation site (MkDocs + mkdocstrings), offline; warnings are errors (a broken docstring reference fails)
docs: install
	$(BIN)/python -m mkdocs build --strict --site-dir site

docs-serve: install
	$(BIN)/python -m mkdocs serve

clean:
	rm -rf $(VENV) build dist src/*.egg-info .pytest_cache site
