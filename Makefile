# Two commands on a fresh machine:  make train   and   make test
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
NATIVE := $(wildcard native/include/*.h native/src/*)
NP ?= 4

.PHONY: install train test test-fast demo bench bench-deps clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(VENV)/.deps: requirements.txt | $(BIN)/python
	$(BIN)/pip install -q -r requirements.txt
	touch $@

$(VENV)/.built: $(VENV)/.deps setup.py $(NATIVE)
	$(BIN)/pip install -q --no-build-isolation --no-deps -e .
	touch $@

install: $(VENV)/.built

$(VENV)/.bench: requirements-bench.txt $(VENV)/.built
	$(BIN)/pip install -q --no-build-isolation -r requirements-bench.txt
	touch $@

bench-deps: $(VENV)/.bench

train: install
	$(BIN)/python -m fobsgd_mpi.demo

demo: install
	$(BIN)/python -m fobsgd_mpi.demo

test: install
	$(BIN)/python -m pytest -q -ra

bench: bench-deps
	$(BIN)/python benchmarks/fwht.py
	$(BIN)/python benchmarks/codec.py

clean:
	rm -rf build *.egg-info fobsgd_mpi/_native*.so $(VENV)/.built
