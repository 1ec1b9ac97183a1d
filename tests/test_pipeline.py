"""End to end: real `dvc repro` in a temp git repo, asserting what DVC itself reports."""

import json

import pandas as pd

from helpers import ALL_STAGES, ran, sha256


def metrics(project) -> dict:
    shown = json.loads(project.dvc("metrics", "show", "--json"))
    (workspace,) = shown.values()
    return {path: entry["data"] for path, entry in workspace["data"].items()}


def test_first_repro_runs_every_stage(reproduced):
    _, output = reproduced
    assert ran(output) == ALL_STAGES


def test_metrics_show_lists_each_chunks_losses_and_test_loss(project):
    shown = metrics(project)
    for chunk, epoch in [("c1", 2), ("c2", 4), ("c3", 6)]:
        train = shown[f"metrics/train/{chunk}.json"]
        assert train["epoch"] == epoch
        assert train["train_loss"] > 0 and train["val_loss"] > 0
        test = shown[f"metrics/test/{chunk}.json"]
        assert test["epoch"] == epoch and test["test_mse"] > 0 and test["test_mae"] > 0


def test_loss_keeps_falling_across_chunk_boundaries(project):
    curve = pd.read_csv(project.path / "metrics/curves/c3.csv")
    assert curve["epoch"].tolist() == [1, 2, 3, 4, 5, 6]
    assert curve["chunk"].tolist() == ["c1", "c1", "c2", "c2", "c3", "c3"]
    last_of_chunk = curve.groupby("chunk")["train_loss"].last()
    assert last_of_chunk["c1"] > last_of_chunk["c2"] > last_of_chunk["c3"]


def test_plots_show_one_continuous_curve(project):
    shown = json.loads(project.dvc("plots", "show", "--json"))
    (plot,) = shown["data"].values()
    epochs = sorted({int(row["epoch"]) for row in plot[0]["content"]["data"]["values"]})
    assert epochs == [1, 2, 3, 4, 5, 6]


def test_editing_a_chunk_reruns_it_and_what_follows_it(project):
    params = project.params
    params["train"]["chunks"]["c2"]["lr"] = 0.003
    project.params = params
    assert ran(project.dvc("repro")) == {"validate", "train@c2", "train@c3", "evaluate"}


def test_appending_a_chunk_runs_only_that_chunk(project):
    c3_before = sha256(project.path / "data/checkpoints/c3.pt")
    params = project.params
    params["train"]["chunks"]["c4"] = {"from": "c3", "epochs": 1}
    project.params = params
    assert ran(project.dvc("repro")) == {"validate", "train@c4", "evaluate"}
    assert sha256(project.path / "data/checkpoints/c3.pt") == c3_before
    assert metrics(project)["metrics/train/c4.json"]["epoch"] == 7


def test_branching_trains_the_shared_parent_once(project):
    params = project.params
    params["train"]["chunks"]["c2_slow"] = {"from": "c1", "epochs": 2, "lr": 0.001}
    project.params = params
    assert ran(project.dvc("repro")) == {"validate", "train@c2_slow", "evaluate"}
    assert sorted(p.name for p in (project.path / "metrics/curves").iterdir()) == ["c2_slow.csv", "c3.csv"]
    branch = pd.read_csv(project.path / "metrics/curves/c2_slow.csv")
    assert branch["chunk"].tolist() == ["c1", "c1", "c2_slow", "c2_slow"]


def test_editing_evaluation_code_reruns_only_evaluate(project):
    with open(project.path / "src/evaluate.py", "a") as file:
        file.write("\n# an edit\n")
    assert ran(project.dvc("repro")) == {"evaluate"}


def test_editing_data_params_reruns_everything(project):
    params = project.params
    params["data"]["noise"] = 0.2
    project.params = params
    assert ran(project.dvc("repro")) == ALL_STAGES


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


def test_forced_rerun_with_identical_result_leaves_downstream_unchanged(project):
    before = {name: sha256(project.path / f"data/checkpoints/{name}.pt") for name in ("c1", "c2", "c3")}
    assert ran(project.dvc("repro", "-f", "-s", "train@c1")) == {"train@c1"}
    output = project.dvc("repro")
    assert ran(output) == set()
    assert "Stage 'train@c2' didn't change" in output
    assert {name: sha256(project.path / f"data/checkpoints/{name}.pt") for name in before} == before


def test_bad_params_fail_the_stage_with_one_line_naming_the_key(project):
    params = project.params
    params["train"]["chunks"]["c1"]["epochs"] = 0
    project.params = params
    result = project.run("dvc", "repro", check=False)
    assert result.returncode != 0
    assert "error: params.yaml: train.chunks.c1.epochs: Input should be greater than 0, got 0" in result.stdout
    assert "Traceback" not in result.stdout


def test_exp_run_with_a_param_override_is_listed_by_exp_show(project):
    project.dvc("exp", "run", "-n", "fast-lr", "-S", "train.lr=0.02")
    rows = json.loads(project.dvc("exp", "show", "--json"))
    (experiment,) = [exp for row in rows for exp in row.get("experiments") or [] if exp["name"] == "fast-lr"]
    data = experiment["revs"][0]["data"]
    assert data["params"]["params.yaml"]["data"]["train"]["lr"] == 0.02
    assert data["metrics"]["metrics/test/c3.json"]["data"]["test_mse"] > 0
