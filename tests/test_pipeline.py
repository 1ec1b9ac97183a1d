"""End to end: real `dvc repro` in a temp git repo, asserting what DVC itself reports."""

import hashlib
import json
import shutil

import pandas as pd
import pytest

from chunktrain.checkpoint import HISTORY, PARENT, PARENT_SHA256, file_sha256, load_checkpoint, record_path
from chunktrain.testing import ALL_STAGES, ROOT, ran, sha256


def metrics(project) -> dict:
    shown = json.loads(project.dvc("metrics", "show", "--json"))
    (workspace,) = shown.values()
    return {path: entry["data"] for path, entry in workspace["data"].items()}


def test_first_repro_runs_every_stage(reproduced):
    _, output = reproduced
    assert ran(output) == ALL_STAGES


def test_each_parents_sha256_is_read_once_then_recorded(reproduced, monkeypatch):
    """DVC replaces an output with a copy from its cache when it commits it; the child's stage hashes that copy."""
    project, _ = reproduced
    checkpoints = project.path / "data/checkpoints"

    def refuse(*args, **kwargs):
        raise AssertionError("file_sha256 read the file: no valid record")

    monkeypatch.setattr(hashlib, "file_digest", refuse)
    for child in ("c1", "c2", "c3"):
        checkpoint = load_checkpoint(checkpoints / f"{child}.pt", rebuild="-")
        assert file_sha256(checkpoints / f"{checkpoint[PARENT]}.pt") == checkpoint[PARENT_SHA256]


def test_sha256_records_and_temp_files_change_neither_dvc_nor_git(project):
    checkpoints = project.path / "data/checkpoints"
    assert record_path(checkpoints / "c1.pt").is_file()  # by train@c2 and evaluate
    assert record_path(project.path / "data/dataset/train.parquet").is_file()  # by each chunk's fingerprint
    record_path(checkpoints / "c3.pt").write_text("{}")
    (checkpoints / ".c3.pt.999999999.abc.tmp").write_bytes(b"partial")  # left by a killed writer
    assert project.dvc("status").strip() == "Data and pipelines are up to date."
    assert project.run("git", "status", "--porcelain").stdout == ""


def read_json(project, path: str) -> dict:
    return json.loads((project.path / path).read_text())


def test_metrics_show_lists_the_best_chunk_only(project):
    assert list(metrics(project)) == ["metrics/best.json"]


def test_each_chunks_file_holds_its_last_epochs_losses_and_test_scores(project):
    chunks = read_json(project, "metrics/chunks.json")
    assert list(chunks) == ["c1", "c2", "c3"]
    for chunk, epoch in [("c1", 2), ("c2", 4), ("c3", 6)]:
        train = read_json(project, f"metrics/train/{chunk}.json")
        assert train["epoch"] == epoch and train["train_loss"] > 0 and train["val_loss"] > 0
        assert chunks[chunk] == {**train, "test_mse": chunks[chunk]["test_mse"], "test_mae": chunks[chunk]["test_mae"],
                                 "checkpoint": f"data/checkpoints/{chunk}.pt"}
        assert chunks[chunk]["test_mse"] > 0 and chunks[chunk]["test_mae"] > 0


def test_best_chunk_has_the_lowest_val_loss_of_the_training_metrics(project):
    # Two branches, so the best chunk is not simply the last one trained.
    project.edit_params(lambda p: p["train"]["chunks"].update(c3_fast={"from": "c2", "epochs": 2, "lr": 0.1}))
    project.dvc("repro")
    val_losses = {chunk: read_json(project, f"metrics/train/{chunk}.json")["val_loss"]
                  for chunk in ("c1", "c2", "c3", "c3_fast")}
    best = metrics(project)["metrics/best.json"]
    assert best["chunk"] == min(val_losses, key=val_losses.get)
    assert best["val_loss"] == min(val_losses.values())
    assert best == {"chunk": best["chunk"], **read_json(project, "metrics/chunks.json")[best["chunk"]]}
    assert (project.path / best["checkpoint"]).is_file()


def test_loss_keeps_falling_across_chunk_boundaries(project):
    curve = pd.read_csv(project.path / "metrics/curves.csv")
    assert curve["branch"].unique().tolist() == ["c3"]
    assert curve["epoch"].tolist() == [1, 2, 3, 4, 5, 6]
    assert curve["chunk"].tolist() == ["c1", "c1", "c2", "c2", "c3", "c3"]
    last_of_chunk = curve.groupby("chunk")["train_loss"].last()
    assert last_of_chunk["c1"] > last_of_chunk["c2"] > last_of_chunk["c3"]


def plots(project, *args: str) -> dict[str, list[dict]]:
    """`dvc plots show|diff --json`: each plot id's data points."""
    shown = json.loads(project.dvc("plots", *args, "--json"))
    return {plot_id: [row for plot in entries for row in plot["content"]["data"]["values"]]
            for plot_id, entries in shown["data"].items()}


def test_plots_show_one_loss_chart_and_one_lr_chart_of_every_branch(project):
    project.edit_params(lambda p: p["train"]["chunks"].update(c3_slow={"from": "c2", "epochs": 2, "lr": 0.001}))
    project.dvc("repro")
    shown = plots(project, "show")
    assert sorted(shown) == ["loss", "lr"]
    loss = shown["loss"]
    for branch in ("c3", "c3_slow"):
        rows = [row for row in loss if row["branch"] == branch]
        assert sorted({int(row["epoch"]) for row in rows}) == [1, 2, 3, 4, 5, 6]
        assert {row["field"] for row in rows} == {"train_loss", "val_loss"}
    assert {row["chunk"] for row in loss if row["branch"] == "c3_slow"} == {"c1", "c2", "c3_slow"}
    lrs = {(row["branch"], int(row["epoch"])): float(row["lr"]) for row in shown["lr"]}
    assert lrs[("c3_slow", 5)] == 0.001 and lrs[("c3", 5)] == 0.01


@pytest.mark.slow
def test_editing_a_chunk_reruns_it_and_what_follows_it(project):
    params = project.params
    params["train"]["chunks"]["c2"]["lr"] = 0.003
    project.params = params
    assert ran(project.dvc("repro")) == {"validate", "train@c2", "train@c3", "evaluate"}


@pytest.mark.slow
def test_appending_a_chunk_runs_only_that_chunk(project):
    c3_before = sha256(project.path / "data/checkpoints/c3.pt")
    params = project.params
    params["train"]["chunks"]["c4"] = {"from": "c3", "epochs": 1}
    project.params = params
    assert ran(project.dvc("repro")) == {"validate", "train@c4", "evaluate"}
    assert sha256(project.path / "data/checkpoints/c3.pt") == c3_before
    assert read_json(project, "metrics/train/c4.json")["epoch"] == 7
    assert pd.read_csv(project.path / "metrics/curves.csv")["branch"].unique().tolist() == ["c4"]


@pytest.mark.slow
def test_branching_trains_the_shared_parent_once(project):
    params = project.params
    params["train"]["chunks"]["c2_slow"] = {"from": "c1", "epochs": 2, "lr": 0.001}
    project.params = params
    assert ran(project.dvc("repro")) == {"validate", "train@c2_slow", "evaluate"}
    curves = pd.read_csv(project.path / "metrics/curves.csv")
    assert curves["branch"].unique().tolist() == ["c3", "c2_slow"]
    assert curves[curves["branch"] == "c2_slow"]["chunk"].tolist() == ["c1", "c1", "c2_slow", "c2_slow"]


@pytest.mark.slow
def test_editing_evaluation_code_reruns_only_evaluate(project):
    with open(project.path / "src/evaluate.py", "a") as file:
        file.write("\n# an edit\n")
    assert ran(project.dvc("repro")) == {"evaluate"}


@pytest.mark.slow
def test_editing_training_code_reruns_every_chunk_through_the_code_digest(project):
    project.append(project.path / "src/chunktrain/schedule.py", "\n# an edit\n")
    # deterministic training rewrites the same checkpoints, so evaluate has nothing new to score
    assert ran(project.dvc("repro")) == {"train-code", "train@c1", "train@c2", "train@c3"}
    project.append(project.path / "src/predict.py", "\n# an edit\n")  # code no training stage runs
    assert ran(project.dvc("repro")) == set()


@pytest.mark.slow
def test_a_forced_single_stage_run_after_an_edit_refuses_instead_of_caching_a_stale_run(project):
    project.edit_params(lambda p: p["train"]["chunks"]["c2"].update(lr=0.003))
    assert "Stage 'train@c2' didn't change" in project.dvc("repro", "-s", "train@c2")  # validate has not run
    forced = project.run("dvc", "repro", "-f", "-s", "train@c2", check=False)
    assert forced.returncode != 0
    assert ("error: data/params/c2.yaml does not match params.yaml; run `dvc repro train@c2` (without -s), which"
            " reruns stages validate and train-code first\n") in forced.stdout
    assert ran(project.dvc("repro", "train@c2")) == {"validate", "train@c2"}


@pytest.mark.slow
def test_editing_data_params_reruns_everything(project):
    params = project.params
    params["data"]["noise"] = 0.2
    project.params = params
    assert ran(project.dvc("repro")) == ALL_STAGES - {"train-code"}


@pytest.mark.slow
def test_reverting_an_edit_restores_from_the_run_cache(project):
    original = project.params
    c3_before = sha256(project.path / "data/checkpoints/c3.pt")
    edited = project.params
    edited["train"]["chunks"]["c2"]["epochs"] = 3
    project.params = edited
    project.dvc("repro")
    project.params = original
    output = project.dvc("repro")
    assert ran(output) == set()
    for stage in ("train@c2", "train@c3", "evaluate"):
        assert f"Stage '{stage}' is cached - skipping run" in output
    assert sha256(project.path / "data/checkpoints/c3.pt") == c3_before


@pytest.mark.slow
def test_forced_rerun_with_identical_result_leaves_downstream_unchanged(project):
    before = {name: sha256(project.path / f"data/checkpoints/{name}.pt") for name in ("c1", "c2", "c3")}
    assert ran(project.dvc("repro", "-f", "-s", "train@c1")) == {"train@c1"}
    output = project.dvc("repro")
    assert ran(output) == set()
    assert "Stage 'train@c2' didn't change" in output
    assert {name: sha256(project.path / f"data/checkpoints/{name}.pt") for name in before} == before


@pytest.mark.slow
def test_bad_params_fail_the_stage_with_one_line_naming_the_key(project):
    params = project.params
    params["train"]["chunks"]["c1"]["epochs"] = 0
    project.params = params
    result = project.run("dvc", "repro", check=False)
    assert result.returncode != 0
    assert "error: params.yaml: train.chunks.c1.epochs: Input should be greater than 0, got 0" in result.stdout
    assert "Traceback" not in result.stdout


@pytest.mark.slow
def test_exp_run_with_a_param_override_is_listed_by_exp_show(project):
    project.dvc("exp", "run", "-n", "fast-lr", "-S", "train.lr=0.02")
    rows = json.loads(project.dvc("exp", "show", "--json"))
    (experiment,) = [exp for row in rows for exp in row.get("experiments") or [] if exp["name"] == "fast-lr"]
    data = experiment["revs"][0]["data"]
    assert data["params"]["params.yaml"]["data"]["train"]["lr"] == 0.02
    assert data["metrics"]["metrics/best.json"]["data"]["test_mse"] > 0


@pytest.mark.slow
def test_a_cooldown_branch_trains_alone_and_ends_at_min_lr(project):
    main_line = {name: sha256(project.path / f"data/checkpoints/{name}.pt") for name in ("c1", "c2", "c3")}
    project.edit_params(lambda p: p["train"]["chunks"].update(c3_cool={"from": "c3", "epochs": 2,
                                                                       "cooldown": "linear"}))
    assert ran(project.dvc("repro")) == {"validate", "train@c3_cool", "evaluate"}
    assert {name: sha256(project.path / f"data/checkpoints/{name}.pt") for name in main_line} == main_line
    history = load_checkpoint(project.path / "data/checkpoints/c3_cool.pt", rebuild="-")[HISTORY]
    assert [record["lr"] for record in history] == [0.01] * 6 + [pytest.approx(0.005), 0.0]  # min_lr 0


@pytest.mark.slow
def test_editing_the_schedule_reruns_every_chunk_and_nothing_before(project):
    project.edit_params(lambda p: p["train"]["schedule"].update(warmup_epochs=1))
    assert ran(project.dvc("repro")) == {"validate", "train@c1", "train@c2", "train@c3", "evaluate"}


def run_longer_and_slower(project) -> None:
    """Two experiments on HEAD: `longer` appends a chunk c4, `slower` gives c3 a lower lr."""
    project.dvc("exp", "run", "-n", "longer", "-S", "+train.chunks.c4={from: c3, epochs: 1}")
    project.run("git", "reset", "-q", "--hard")  # `exp run` leaves its results in the workspace
    project.dvc("checkout", "--force")
    project.dvc("exp", "run", "-n", "slower", "-S", "+train.chunks.c3.lr=0.001")


@pytest.mark.slow
def test_plots_diff_overlays_experiments_with_other_chunks_in_the_same_chart(project):
    run_longer_and_slower(project)
    shown = plots(project, "diff", "HEAD", "longer", "slower")
    assert sorted(shown) == ["loss", "lr"]
    branches = {(row["rev"], row["branch"]) for row in shown["loss"]}
    assert branches == {("HEAD", "c3"), ("longer", "c4"), ("slower", "c3")}

    # `make exps`, the README's experiment table: one row each, best val_loss first, within 120 columns.
    shutil.copy(ROOT / "Makefile", project.path / "Makefile")
    table = project.run("make", "--no-print-directory", "-o", ".venv/.installed", "exps").stdout.splitlines()
    header, *rows = table
    assert max(len(line) for line in table) <= 120, "\n".join(table)
    assert "val_loss" in header and "test_mse" in header
    names = [row.split()[0] for row in rows]
    assert {"longer", "slower"} <= set(names)
    val_loss = header.split().index("val_loss")
    losses = [float(row.split()[val_loss]) for row in rows if row.split()[0] in ("longer", "slower")]
    assert losses == sorted(losses)


@pytest.mark.slow
def test_exp_apply_leaves_only_the_applied_experiments_metrics(project):
    run_longer_and_slower(project)
    project.dvc("exp", "apply", "longer")
    assert list(read_json(project, "metrics/chunks.json")) == ["c1", "c2", "c3", "c4"]
    project.dvc("exp", "apply", "slower")
    assert list(metrics(project)) == ["metrics/best.json"]
    assert metrics(project)["metrics/best.json"]["chunk"] in {"c1", "c2", "c3"}
    assert list(read_json(project, "metrics/chunks.json")) == ["c1", "c2", "c3"]
    assert pd.read_csv(project.path / "metrics/curves.csv")["branch"].unique().tolist() == ["c3"]
    assert project.dvc("status").strip() == "Data and pipelines are up to date."
