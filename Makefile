# `make run` and `make test` are all a fresh machine needs (Python 3.11 and git); `make bench` measures overhead.
PYTHON ?= python3
VENV := .venv
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)
export DVC_NO_ANALYTICS := 1

.PHONY: setup run test test-fast bench snapshots clear-snapshots verify exps plots predict sample huggingface clean-venv

setup: $(VENV)/.installed

# Reinstalls only when requirements.txt changes, so `make setup` is cheap to repeat. What the pipeline needs alone:
# the export's transformers and the test tools are installed by the targets that use them, so `make run` waits less.
$(VENV)/.installed: requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --disable-pip-version-check --quiet -r requirements.txt
	touch $@

$(VENV)/.installed-export: requirements-export.txt $(VENV)/.installed
	$(VENV)/bin/pip install --disable-pip-version-check --quiet -r requirements-export.txt
	touch $@

$(VENV)/.installed-test: requirements-test.txt $(VENV)/.installed-export
	$(VENV)/bin/pip install --disable-pip-version-check --quiet -r requirements-test.txt
	touch $@

# src/run.py is `dvc repro`, then each stage's wall time; after Ctrl-C, where the chunk stopped, as the last line.
run: setup
	python src/plan.py --params params.yaml --checkpoints data/checkpoints  # fail fast, before dvc builds the graph
	python src/run.py
	dvc metrics show

# Two worker processes, each taking whole test files (their module and session fixtures stay in one process).
test: $(VENV)/.installed-test
	pytest -n 2 --dist loadfile

# The edit-test loop: unit tests and one small end-to-end repro.
test-fast: $(VENV)/.installed-test
	pytest -n 2 --dist loadfile -m "not slow"

snapshots: setup
	PYTHONPATH=src python -m chunktrain.runner.snapshots

clear-snapshots: setup
	PYTHONPATH=src python -m chunktrain.runner.snapshots --clear

# Is a chunk exact on this machine? make verify CHUNK=c2 [STEPS=N]: trains it again from its parent three ways (whole,
# in two halves, killed and resumed) in a temporary copy and compares each with data/checkpoints/c2.pt, tensor by tensor.
verify: setup
	PYTHONPATH=src python -m chunktrain.runner.verify $(or $(CHUNK),$(error give the chunk: make verify CHUNK=c2)) \
	  $(if $(STEPS),--steps $(STEPS))

# One row per experiment, best val_loss first: the chunks it trained, the last of them and its best chunk, each with
# its val_loss, and the params that differ; within 120 columns. ALL=1: a row per chunk of every experiment instead.
exps: setup
	@python src/exps.py $(if $(ALL),--all)

# Ratios to plain baselines and to peers measured in the same run; about an hour. Writes metrics/bench_gpt.json
# (nanoGPT's recipe, on ../shared/data/tinyshakespeare.txt), metrics/bench_bpe.json (that recipe with characters
# against BPE tokenizers, in bits per character), metrics/bench_peers.json (against nanoGPT's train.py, Lightning and
# a plain loop), metrics/bench_tables.json (own tables against scikit-learn's baselines) and metrics/bench.json;
# installs benchmarks/requirements.txt, which nothing else needs.
# GPT="--steps 200": the recipe scaled down; GPT="--corpus PATH": the text elsewhere (BPE= takes it too).
# BPE="--short": the tokenizers in a few minutes, printed only. PEERS="--short": the peers in a few minutes, printed
# only. TABLES="--grid 3": also the variants of the table defaults, 3 seeds (~10 min).
# BENCH="--full --before 7ad9a00": the pipeline at issue 18's workload (~20 min).
bench: setup
	python benchmarks/gpt.py $(GPT)
	python benchmarks/bpe.py $(BPE)
	pip install --disable-pip-version-check --quiet -r benchmarks/requirements.txt
	python benchmarks/peers.py $(PEERS)
	python benchmarks/tables.py $(TABLES)
	python benchmarks/bench.py $(BENCH)

# The loss and lr charts of dvc plots show, drawn offline: metrics/plots/{loss,lr}.{png,svg} and index.html.
plots: setup
	python src/plots.py --out metrics/plots

# What the user gives reaches the scripts through the environment, as typed: neither make nor the shell reads `$`,
# quotes or spaces in it.
predict sample huggingface: export CHECKPOINT_ARG = $(value CHECKPOINT)
huggingface: export OUT_ARG = $(value OUT)
predict: export INPUT_ARG = $(value INPUT)
predict: export OUTPUT_ARG = $(value OUTPUT)
sample: export PROMPT_ARG = $(value PROMPT)

# The checkpoint predict and sample use: CHECKPOINT=data/checkpoints/c2.pt, or by default the best chunk's.
BEST = if [ -n "$$CHECKPOINT_ARG" ]; then printf '%s\n' "$$CHECKPOINT_ARG"; else python -c 'import json, pathlib, sys;\
  best = pathlib.Path("metrics/best.json"); print(json.loads(best.read_text())["checkpoint"]) if best.is_file() else\
  sys.exit("error: no metrics/best.json yet: run make run, or give CHECKPOINT=data/checkpoints/<chunk>.pt")'; fi

# make predict INPUT=new.csv OUTPUT=predictions.csv [CHECKPOINT=...]
predict: setup
	@checkpoint="$$($(BEST))" && python src/predict.py $${INPUT_ARG:+--input "$$INPUT_ARG"} \
	  $${OUTPUT_ARG:+--output "$$OUTPUT_ARG"} --checkpoint "$$checkpoint"

# A language model's text: make sample [PROMPT="ROMEO:"] [TOKENS=500] [SEED=0] [CHECKPOINT=...]
TOKENS ?= 500
SEED ?= 0
sample: setup
	@checkpoint="$$($(BEST))" && python src/sample.py --checkpoint "$$checkpoint" $${PROMPT_ARG:+--prompt "$$PROMPT_ARG"} \
	  --tokens "$(TOKENS)" --temperature 0.8 --top_k 20 --seed "$(SEED)"

# A language model as a Hugging Face GPT-2 folder: make huggingface OUT=exported/gpt [CHECKPOINT=...]
huggingface: $(VENV)/.installed-export
	@checkpoint="$$($(BEST))" && python src/export.py --checkpoint "$$checkpoint" --huggingface "$${OUT_ARG:?give OUT=<folder>}"

clean-venv:
	rm -rf $(VENV)
