# `make run` and `make test` are all a fresh machine needs (Python 3.11 and git); `make bench` measures overhead.
PYTHON ?= python3
VENV := .venv
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)
export DVC_NO_ANALYTICS := 1

.PHONY: setup run test test-fast bench snapshots clear-snapshots exps predict sample clean-venv

setup: $(VENV)/.installed

# Reinstalls only when requirements.txt changes, so `make setup` is cheap to repeat.
$(VENV)/.installed: requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --disable-pip-version-check --quiet -r requirements.txt
	touch $@

run: setup
	python src/plan.py --params params.yaml  # fail fast, before dvc builds the graph
	dvc repro
	dvc metrics show

test: setup
	pytest

# The edit-test loop: unit tests and one small end-to-end repro.
test-fast: setup
	pytest -m "not slow"

snapshots: setup
	PYTHONPATH=src python -m chunktrain.training.snapshots

clear-snapshots: setup
	PYTHONPATH=src python -m chunktrain.training.snapshots --clear

# One row per experiment, best val_loss first: its best chunk and the params that differ; fits 120 columns
# while few params differ.
exps: setup
	@dvc exp show --csv --only-changed --drop 'Created|typ|parent|State|Executor|.*/|train_loss|test_mae|checkpoint' \
	  --keep '(chunk|epoch|val_loss|test_mse)$$' --sort-by metrics/best.json:val_loss --precision 4 \
	  | sed 's/train\.chunks\./chunks./g' | column -s, -t

# Ratios to plain baselines measured in the same run; about 10 minutes. Writes metrics/bench.json.
# make bench BENCH="--full --before 7ad9a00": the issue's workload, and that revision measured in turn (~20 min).
bench: setup
	python benchmarks/bench.py $(BENCH)

# The checkpoint predict and sample use: CHECKPOINT=data/checkpoints/c2.pt, or by default the best chunk's.
BEST = $(if $(CHECKPOINT),$(CHECKPOINT),"$$(python -c 'import json; print(json.load(open("metrics/best.json"))["checkpoint"])')")

# make predict INPUT=new.csv OUTPUT=predictions.csv [CHECKPOINT=...]
predict: setup
	python src/predict.py --input $(INPUT) --output $(OUTPUT) --checkpoint $(BEST)

# A language model's text: make sample [PROMPT="ROMEO:"] [TOKENS=500] [SEED=0] [CHECKPOINT=...]
TOKENS ?= 500
SEED ?= 0
sample: setup
	python src/sample.py --checkpoint $(BEST) $(if $(PROMPT),--prompt "$(PROMPT)") --tokens $(TOKENS) --temperature 0.8 \
	  --top_k 20 --seed $(SEED)

clean-venv:
	rm -rf $(VENV)
