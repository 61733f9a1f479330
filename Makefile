# `make demo` and `make test` work on a fresh clone: each creates .venv and installs what it needs.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
PIP_INSTALL := $(PIP) install --quiet --disable-pip-version-check -c constraints.txt

.PHONY: demo test lint bench capi clean

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

# libunigs.so + unigs.h + unigs.pc in build/capi (cffi embedding of the lean runtime)
capi: $(VENV)/.dev
	$(PY) capi/build.py --out build/capi
	gcc -O2 examples/c/segment.c -Ibuild/capi/include -Lbuild/capi/lib -Wl,-rpath,$(CURDIR)/build/capi/lib \
		-lunigs -o build/capi/segment
	@echo "example: build/capi/segment --decode colormap.ppm labels.raw"

clean:
	rm -rf $(VENV) demo_out .pytest_cache build
