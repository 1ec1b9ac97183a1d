# `make run` and `make test` are all a fresh machine needs (Python 3.11 and git); `make bench` measures overhead.
PYTHON ?= python3
VENV := .venv
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)
export DVC_NO_ANALYTICS := 1

.PHONY: setup run test test-fast bench snapshots clear-snapshots verify exps plots predict sample clean-venv

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

# Two worker processes, each taking whole test files (their module and session fixtures stay in one process).
test: setup
	pytest -n 2 --dist loadfile

# The edit-test loop: unit tests and one small end-to-end repro.
test-fast: setup
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

# One row per experiment, best val_loss first: its best chunk and the params that differ; fits 120 columns
# while few params differ. ALL=1: a row per chunk of every experiment instead (src/exps.py).
exps: setup
ifdef ALL
	@python src/exps.py
else
	@dvc exp show --csv --only-changed --drop 'Created|typ|parent|State|Executor|.*/|train_loss|test_mae|checkpoint' \
	  --keep '(chunk|epoch|val_loss|test_mse)$$' --sort-by metrics/best.json:val_loss --precision 4 \
	  | sed 's/train\.chunks\./chunks./g' | column -s, -t
endif

# Ratios to plain baselines measured in the same run; about 20 minutes. Writes metrics/bench_gpt.json (nanoGPT's
# recipe, on ../shared/data/tinyshakespeare.txt) and metrics/bench.json. GPT="--steps 200": the recipe scaled down;
# GPT="--corpus PATH": the text elsewhere. BENCH="--full --before 7ad9a00": the pipeline at issue 18's workload (~20 min).
bench: setup
	python benchmarks/gpt.py $(GPT)
	python benchmarks/bench.py $(BENCH)

# The loss and lr charts of dvc plots show, drawn offline: metrics/plots/{loss,lr}.{png,svg} and index.html.
plots: setup
	python src/plots.py --out metrics/plots

# The checkpoint predict and sample use: CHECKPOINT=data/checkpoints/c2.pt, or by default the best chunk's.
BEST = $(if $(CHECKPOINT),echo "$(CHECKPOINT)",python -c 'import json, pathlib, sys; best = pathlib.Path("metrics/best.json");\
  print(json.loads(best.read_text())["checkpoint"]) if best.is_file() else sys.exit("error: no metrics/best.json yet:\
  run make run, or give CHECKPOINT=data/checkpoints/<chunk>.pt")')

# make predict INPUT=new.csv OUTPUT=predictions.csv [CHECKPOINT=...]
predict: setup
	@checkpoint="$$($(BEST))" && python src/predict.py $(if $(INPUT),--input "$(INPUT)") \
	  $(if $(OUTPUT),--output "$(OUTPUT)") --checkpoint "$$checkpoint"

# A language model's text: make sample [PROMPT="ROMEO:"] [TOKENS=500] [SEED=0] [CHECKPOINT=...]
TOKENS ?= 500
SEED ?= 0
sample: setup
	@checkpoint="$$($(BEST))" && python src/sample.py --checkpoint "$$checkpoint" $(if $(PROMPT),--prompt "$(PROMPT)") \
	  --tokens $(TOKENS) --temperature 0.8 --top_k 20 --seed $(SEED)

clean-venv:
	rm -rf $(VENV)
