"""Experiments: `dvc exp run -S` through DVC's queue, two at once, then compared, plotted and applied."""

import json
import shutil

import pandas as pd
import pytest

from chunktrain.testing import ROOT, Project, stop_queue

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def experiments(reproduced, tmp_path_factory) -> Project:
    """The reproduced pipeline and two experiments run side by side by the queue: `longer` appends a chunk c4,
    `slower` gives c3 a lower lr (`+`: c3 has no lr key of its own)."""
    project = reproduced[0].copy(tmp_path_factory.mktemp("experiments") / "repo")
    project.dvc("exp", "run", "--queue", "-n", "longer", "-S", "+train.chunks.c4={from: c3, epochs: 1}")
    project.dvc("exp", "run", "--queue", "-n", "slower", "-S", "+train.chunks.c3.lr=0.001")
    try:
        # Waits for the experiments, not for the workers: DVC can leave one running for good (see stop_queue).
        project.dvc("exp", "run", "--run-all", "-j", "2", timeout=500)
        yield project
    finally:
        stop_queue(project)


def test_exp_show_lists_each_experiment_with_its_params_and_best_chunk(experiments):
    rows = json.loads(experiments.dvc("exp", "show", "--json"))
    shown = {exp["name"]: exp["revs"][0]["data"] for row in rows for exp in row.get("experiments") or []}
    chunks = {name: shown[name]["params"]["params.yaml"]["data"]["train"]["chunks"] for name in ("longer", "slower")}
    assert chunks["longer"]["c4"] == {"from": "c3", "epochs": 1} and "lr" not in chunks["longer"]["c3"]
    assert chunks["slower"]["c3"]["lr"] == 0.001 and "c4" not in chunks["slower"]
    best = {name: shown[name]["metrics"]["metrics/best.json"]["data"] for name in ("longer", "slower")}
    assert best["longer"]["chunk"] in {"c1", "c2", "c3", "c4"} and best["slower"]["chunk"] in {"c1", "c2", "c3"}
    assert best["longer"] != best["slower"]


def test_plots_diff_overlays_experiments_with_other_chunks_in_one_chart(experiments):
    shown = json.loads(experiments.dvc("plots", "diff", "HEAD", "longer", "slower", "--json"))["data"]
    assert sorted(shown) == ["loss", "lr"]
    branches = {(row["rev"], row["branch"]) for plot in shown["loss"] for row in plot["content"]["data"]["values"]}
    assert branches == {("HEAD", "c3"), ("longer", "c4"), ("slower", "c3")}


def test_make_exps_prints_one_row_per_experiment_best_val_loss_first(experiments):
    shutil.copy(ROOT / "Makefile", experiments.path / "Makefile")
    table = experiments.run("make", "--no-print-directory", "-o", ".venv/.installed", "exps").stdout.splitlines()
    header, *rows = table
    assert max(len(line) for line in table) <= 120, "\n".join(table)
    columns = header.split()
    assert {"Experiment", "chunk", "epoch", "val_loss", "test_mse"} <= set(columns), header
    assert {"chunks.c3.lr", "chunks.c4.from", "chunks.c4.epochs"} <= set(columns), header  # the params that differ
    by_name = {row.split()[0]: row.split() for row in rows}
    assert {"longer", "slower"} <= set(by_name)
    losses = [float(by_name[name][columns.index("val_loss")]) for name in by_name if name in ("longer", "slower")]
    assert losses == sorted(losses)


def test_exp_apply_leaves_only_the_applied_experiments_results(experiments, tmp_path):
    project = experiments.copy(tmp_path / "repo")
    project.dvc("exp", "apply", "longer")
    assert list(json.loads((project.path / "metrics/chunks.json").read_text())) == ["c1", "c2", "c3", "c4"]
    project.dvc("exp", "apply", "slower")
    assert list(json.loads((project.path / "metrics/chunks.json").read_text())) == ["c1", "c2", "c3"]
    assert pd.read_csv(project.path / "metrics/curves.csv")["branch"].unique().tolist() == ["c3"]
    assert project.status() == {}


def test_make_exps_all_prints_every_chunk_of_every_experiment(experiments):
    shutil.copy(ROOT / "Makefile", experiments.path / "Makefile")
    shutil.copy(ROOT / "src/exps.py", experiments.path / "src/exps.py")
    header, *rows = experiments.run("make", "--no-print-directory", "-o", ".venv/.installed", "exps",
                                    "ALL=1").stdout.splitlines()
    columns = header.split()
    assert columns[:2] == ["Experiment", "chunk"] and "val_loss" in columns, header
    chunks = {}
    for row in rows:
        chunks.setdefault(row.split()[0], set()).add(row.split()[1])
    assert chunks["longer"] == {"c1", "c2", "c3", "c4"} and chunks["slower"] == {"c1", "c2", "c3"}
    losses = [float(row.split()[columns.index("val_loss")]) for row in rows]
    assert losses == sorted(losses)
