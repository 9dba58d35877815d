# Two commands on a fresh machine:  make train   and   make test
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
NATIVE := $(wildcard native/include/*.h native/src/*)
NP ?= 4
# standard: torch with CUDA (torchvision models, GPU workers); cpu: half the memory per rank, no torchvision
TORCH ?= standard
ifeq ($(wildcard requirements-torch-$(TORCH).txt),)
$(error TORCH=$(TORCH) is not a torch build: use TORCH=standard or TORCH=cpu)
endif

.PHONY: install train test test-fast demo bench bench-deps reference gpu-suite clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

# one stamp per torch build: switching TORCH on an existing .venv reinstalls torch (rm -rf .venv for a clean one)
$(VENV)/.deps-$(TORCH): requirements.txt requirements-torch-$(TORCH).txt | $(BIN)/python
	$(BIN)/pip install -q -r requirements-torch-$(TORCH).txt -r requirements.txt
	touch $@

$(VENV)/.built: $(VENV)/.deps-$(TORCH) setup.py $(NATIVE)
	$(BIN)/pip install -q --no-build-isolation --no-deps -e .
	touch $@

install: $(VENV)/.built

$(VENV)/.bench: requirements-bench.txt $(VENV)/.built
	$(BIN)/pip install -q --no-build-isolation -r requirements-bench.txt
	touch $@

bench-deps: $(VENV)/.bench

# The main job: FO-SGD and the fp32 baseline on MNIST-1D (MLP), NP ranks, then the report.
train: install
	@mkdir -p results
	$(BIN)/mpirun -n $(NP) $(BIN)/python -m fobsgd_mpi.train --out results/main-fo-sgd.h5 --overwrite
	$(BIN)/mpirun -n $(NP) $(BIN)/python -m fobsgd_mpi.train --algorithm sgd --out results/main-sgd.h5 --overwrite
	$(BIN)/python -m fobsgd_mpi.report results/main-fo-sgd.h5 results/main-sgd.h5 --out results/main

demo: install
	$(BIN)/python -m fobsgd_mpi.demo

test: install
	$(BIN)/python -m pytest -q -ra

bench: bench-deps
	$(BIN)/python benchmarks/fwht.py
	$(BIN)/python benchmarks/codec.py

# Every file in results/reference/ from the current commit (root, hours): see benchmarks/make_reference.sh
reference: install
	PYTHON=$(BIN)/python benchmarks/make_reference.sh

# CUDA tests and GPU benchmarks on a GPU node, into results/reference/gpu-<device>/ (benchmarks/gpu_suite.sh)
gpu-suite: install
	PYTHON=$(BIN)/python benchmarks/gpu_suite.sh

clean:
	rm -rf build *.egg-info fobsgd_mpi/_native*.so $(VENV)/.built
