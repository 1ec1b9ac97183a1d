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


def make_exps(experiments: Project, *args: str) -> list[str]:
    shutil.copy(ROOT / "Makefile", experiments.path / "Makefile")
    shutil.copy(ROOT / "src/exps.py", experiments.path / "src/exps.py")
    return experiments.run("make", "--no-print-directory", "-o", ".venv/.installed", "exps", *args).stdout.splitlines()


def test_make_exps_shows_the_chunks_each_experiment_trained_its_last_and_its_best_in_120_columns(experiments):
    table = make_exps(experiments)
    assert max(len(line) for line in table) <= 120, "\n".join(table)
    header, *rows = table
    assert header.split() == ["Experiment", "trained", "last", "val_loss", "test_mse", "best", "val_loss", "test_mse",
                              "params", "that", "differ"], header
    by_name = {row.split()[0]: row.split() for row in rows}
    longer, slower = by_name["longer"], by_name["slower"]
    # what each added or changed, with its own loss, whichever chunk is its best
    assert longer[1:3] == ["c4", "c4"] and longer[8:] == ["chunks.c4={from:", "c3,", "epochs:", "1}"], longer
    assert slower[1:3] == ["c3", "c3"] and slower[8:] == ["chunks.c3.lr=0.001"], slower
    header_all, *rows_all = make_exps(experiments, "ALL=1")
    every = {(row.split()[0], row.split()[1]): row.split() for row in rows_all}
    val_loss = header_all.split().index("val_loss")
    assert float(longer[3]) == float(every[("longer", "c4")][val_loss])
    assert float(longer[6]) == min(float(row[val_loss]) for (name, _), row in every.items() if name == "longer")
    best = [float(by_name[row.split()[0]][6]) for row in rows]
    assert best == sorted(best)  # best val_loss first


def test_exp_apply_leaves_only_the_applied_experiments_results(experiments, tmp_path):
    project = experiments.copy(tmp_path / "repo")
    project.dvc("exp", "apply", "longer")
    assert list(json.loads((project.path / "metrics/chunks.json").read_text())) == ["c1", "c2", "c3", "c4"]
    project.dvc("exp", "apply", "slower")
    assert list(json.loads((project.path / "metrics/chunks.json").read_text())) == ["c1", "c2", "c3"]
    assert pd.read_csv(project.path / "metrics/curves.csv")["branch"].unique().tolist() == ["c3"]
    assert project.status() == {}


def test_make_exps_all_prints_every_chunk_of_every_experiment(experiments):
    header, *rows = make_exps(experiments, "ALL=1")
    columns = header.split()
    assert columns[:2] == ["Experiment", "chunk"] and "val_loss" in columns, header
    chunks = {}
    for row in rows:
        chunks.setdefault(row.split()[0], set()).add(row.split()[1])
    assert chunks["longer"] == {"c1", "c2", "c3", "c4"} and chunks["slower"] == {"c1", "c2", "c3"}
    losses = [float(row.split()[columns.index("val_loss")]) for row in rows]
    assert losses == sorted(losses)


def test_make_exps_reads_a_revision_without_chunk_scores_as_none(monkeypatch):
    """A commit before evaluate ran has no metrics/chunks.json: DVC's error, not a traceback (probe 30)."""
    import exps
    from dvc.exceptions import PathMissingError

    def missing(path, rev):
        raise PathMissingError(path, rev)

    monkeypatch.setattr(exps.dvc.api, "read", missing)
    assert exps.chunk_scores("abc123") == {}
