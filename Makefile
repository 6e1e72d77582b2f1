# Two commands set up a fresh machine: `make demo` and `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
# torch==2.13.0 is pinned here for this environment (a local CPU wheel); the package metadata keeps a range.
TORCH_PIN ?= torch==2.13.0
STAMP := $(VENV)/.installed

.PHONY: install demo test test-quick clean

$(BIN)/python:
	$(PY) -m venv $(VENV)

$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/pip install --quiet --disable-pip-version-check "$(TORCH_PIN)"
	$(BIN)/pip install --quiet --disable-pip-version-check -e ".[experiments,ray,dev]"
	touch $(STAMP)

install: $(STAMP)

demo: install
	$(BIN)/discretegrad demo --out results/demo

test: install
	$(BIN)/python -m pytest -q -n 2 --dist loadgroup tests

# the inner loop: everything but the tests marked slow (real CLI processes, kill/resume, longer runs)
test-quick: install
	$(BIN)/python -m pytest -q -n 2 --dist loadgroup -m "not slow" tests

clean:
	rm -rf $(VENV) build dist src/*.egg-info .pytest_cache
