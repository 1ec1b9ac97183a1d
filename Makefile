# `make run` and `make test` are all a fresh machine needs (Python 3.11 and git); `make bench` measures overhead.
PYTHON ?= python3
VENV := .venv
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)
export DVC_NO_ANALYTICS := 1

.PHONY: setup run test test-fast bench snapshots clear-snapshots clean-venv

setup: $(VENV)/.installed

# Reinstalls only when requirements.txt changes, so `make setup` is cheap to repeat.
$(VENV)/.installed: requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --disable-pip-version-check --quiet -r requirements.txt
	touch $@

run: setup
	PYTHONPATH=src python -m chunktrain.params params.yaml  # fail fast, before dvc builds the graph
	dvc repro
	dvc metrics show

test: setup
	pytest

# The edit-test loop: unit tests and one small end-to-end repro.
test-fast: setup
	pytest -m "not slow"

snapshots: setup
	PYTHONPATH=src python -m chunktrain.snapshots

clear-snapshots: setup
	PYTHONPATH=src python -m chunktrain.snapshots --clear

# Ratios to plain-PyTorch baselines measured in the same run; a few minutes. Writes metrics/bench.json.
bench: setup
	python benchmarks/bench.py

clean-venv:
	rm -rf $(VENV)
