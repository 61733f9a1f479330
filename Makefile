# `make demo` and `make test` work on a fresh clone: each creates .venv and installs what it needs.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
PIP_INSTALL := $(PIP) install --quiet --disable-pip-version-check -c constraints.txt

.PHONY: demo test lint bench clean

$(PY):
	$(PYTHON) -m venv $(VENV)

# torch first, from the pinned CPU wheel, so nothing later can resolve it to a CUDA build.
$(VENV)/.torch: $(PY) constraints.txt
	$(PIP_INSTALL) torch==2.13.0
	touch $@

$(VENV)/.runtime: $(PY) pyproject.toml constraints.txt
	$(PIP_INSTALL) -e .
	touch $@

$(VENV)/.dev: $(VENV)/.torch pyproject.toml constraints.txt
	$(PIP_INSTALL) -e ".[export,train,bench,test]"
	touch $@

demo: $(VENV)/.runtime
	$(VENV)/bin/unigs-demo --out demo_out

test: $(VENV)/.dev
	$(VENV)/bin/ruff check .
	$(PY) -m pytest -q

lint: $(VENV)/.dev
	$(VENV)/bin/ruff check .

bench: $(VENV)/.dev
	$(VENV)/bin/unigs-bench decoder --json benchmarks/results/decoder.json

clean:
	rm -rf $(VENV) demo_out .pytest_cache
