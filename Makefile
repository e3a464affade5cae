# lmcli developer commands. `make demo` runs the whole pipeline on the embedded demo corpus;
# `make test` runs the test suite. Both install what they need first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install test demo bench clean

install: $(STAMP)

# torch is installed first and pinned: on these machines 2.13.0 is a local CPU wheel, while an
# unpinned torch (asked for by any dependency) would pull several GB of CUDA packages.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e ".[dev,bench]"
	touch $(STAMP)

test: install
	$(BIN)/python -m pytest

demo: install
	bash scripts/demo.sh

bench: install
	$(BIN)/python benchmarks/run_all.py

clean:
	rm -rf $(VENV) workspace .bench *.egg-info
