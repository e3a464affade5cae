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

# pytest-xdist: one worker per core. Much of the suite waits on the lmcli processes it starts, so
# two workers on two cores still gain.
test: install
	$(BIN)/python -m pytest -n auto

# The demo pipeline, one file target per stage so a re-run reuses every stage that is up to date.
WORKSPACE ?= workspace
export LMCLI_WORKSPACE := $(WORKSPACE)
LMCLI := $(BIN)/lmcli
DEMO_TEXT := $(WORKSPACE)/data/demo-train.txt
DEMO_TOKENIZER := $(WORKSPACE)/tokenizer/vocab.json
DEMO_IDS := $(WORKSPACE)/data/train.npy
DEMO_RUN := $(WORKSPACE)/runs/demo
DEMO_CURVES := $(WORKSPACE)/demo-curves.png

demo: $(DEMO_CURVES)
	$(LMCLI) generate --prompt "Once upon a time" --checkpoint $(DEMO_RUN) --seed 0 --max-tokens 200
	@echo
	@echo "corpus     $(WORKSPACE)/data/demo-train.txt, demo-valid.txt"
	@echo "tokenizer  $(WORKSPACE)/tokenizer/ (vocab.json, merges.txt)"
	@echo "token ids  $(WORKSPACE)/data/train.npy, valid.npy"
	@echo "run        $(DEMO_RUN)/ (config.toml, metrics.jsonl, train.log, latest.pt, best.pt)"
	@echo "curves     $(DEMO_CURVES)"

$(DEMO_TEXT): lmcli/data/demo.py | $(STAMP)
	$(LMCLI) data demo
	touch $@

$(DEMO_TOKENIZER): $(DEMO_TEXT)
	$(LMCLI) train-bpe --vocab 1024 --force

$(DEMO_IDS): $(DEMO_TOKENIZER)
	$(LMCLI) encode

# Train and plot in one recipe: the figure exists only once a run has finished.
$(DEMO_CURVES): $(DEMO_IDS) lmcli/configs/demo.toml
	rm -rf $(DEMO_RUN)
	$(LMCLI) train --config demo --name demo
	$(LMCLI) plot $(DEMO_RUN) -o $@

bench: install
	$(BIN)/python benchmarks/run_all.py

clean:
	rm -rf $(VENV) workspace .bench *.egg-info
