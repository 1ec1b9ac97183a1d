"""Parallel experiments: DVC's queue runs variants side by side, each on its own params and code."""

import json
import shutil

import pytest

from chunktrain.testing import Project, stop_queue

pytestmark = pytest.mark.slow

MARKER = "evaluate: code of the second experiment"


@pytest.fixture(scope="module")
def queued(reproduced, tmp_path_factory) -> Project:
    """Two experiments with different train.lr, the second also with a code change, run by `--run-all -j 2`."""
    source, _ = reproduced
    project = Project(tmp_path_factory.mktemp("experiments") / "repo")
    shutil.copytree(source.path, project.path, symlinks=True, ignore=shutil.ignore_patterns("tmp"))
    # One chunk: train.lr reruns every chunk, and one per experiment keeps this test short on 2 cores.
    params = project.params
    params["train"]["chunks"] = {"c1": params["train"]["chunks"]["c1"]}
    project.params = params
    project.commit("one chunk")
    project.dvc("exp", "run", "--queue", "-n", "lr-high", "-S", "train.lr=0.02")
    with open(project.path / "src/evaluate.py", "a") as file:
        file.write(f"\nprint({MARKER!r})\n")
    project.commit("evaluate prints a marker")  # queued experiments take HEAD plus uncommitted edits
    project.dvc("exp", "run", "--queue", "-n", "lr-low", "-S", "train.lr=0.002")
    try:
        project.dvc("exp", "run", "--run-all", "-j", "2")
        yield project
    finally:
        stop_queue(project)


def shown_experiments(project: Project) -> dict[str, dict]:
    # The two experiments were queued on different commits; plain `exp show` lists only HEAD's.
    rows = json.loads(project.dvc("exp", "show", "--all-commits", "--json"))
    return {exp["name"]: exp["revs"][0]["data"] for row in rows for exp in row.get("experiments") or []}


def test_both_queued_experiments_succeed(queued):
    project = queued
    status = project.dvc("queue", "status")
    for name in ("lr-high", "lr-low"):
        assert any(line.split()[1:2] == [name] and "Success" in line for line in status.splitlines()), status


def test_exp_show_lists_each_experiment_with_its_lr_and_losses(queued):
    project = queued
    shown = shown_experiments(project)
    lrs = {name: shown[name]["params"]["params.yaml"]["data"]["train"]["lr"] for name in ("lr-high", "lr-low")}
    assert lrs == {"lr-high": 0.02, "lr-low": 0.002}
    losses = {}
    for name in ("lr-high", "lr-low"):
        best = shown[name]["metrics"]["metrics/best.json"]["data"]
        assert best["chunk"] == "c1" and best["train_loss"] > 0
        losses[name] = best["test_mse"]
        assert losses[name] > 0
    # Each trained on its own lr: the same seed and data give different losses.
    assert losses["lr-high"] != losses["lr-low"]


def test_each_experiment_ran_its_own_copy_of_the_code(queued):
    project = queued
    # lr-high was queued before the commit that added the marker, lr-low after it.
    assert MARKER not in project.dvc("queue", "logs", "lr-high")
    assert MARKER in project.dvc("queue", "logs", "lr-low")
