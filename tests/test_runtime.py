"""How a chunk runs on its machine: the charts follow it while it trains, and its threads fit the CPUs it may use."""

import csv
import json
import os

import pytest
import torch

from chunktrain.core import checkpoint as ckpt
from chunktrain.core.curves import other_branches, tree_curves
from chunktrain.core.files import write_rows
from chunktrain.testing import TINY_PARAMS, new_project, write_params
from chunktrain.training.parallel import available_cpus

SIGNAL = ".dvc/tmp/exps/run/DVCLIVE_STEP_COMPLETED"  # what dvclive writes for the VS Code extension


def rows(path) -> list[dict]:
    with open(path, newline="") as file:
        return list(csv.DictReader(file))


@pytest.mark.slow
def test_the_charts_data_grows_after_every_round_and_ends_as_evaluate_writes_it(tmp_path):
    params = {**TINY_PARAMS, "train": {**TINY_PARAMS["train"], "chunks": {"c1": {"from": "init", "epochs": 3},
                                                                        "c2": {"from": "c1", "epochs": 1}}}}
    project = new_project(tmp_path / "repo", params)
    # Killed while c1 writes the charts' data for the third time: the file holds what the plots drew after round 2.
    killed = project.run("dvc", "repro", check=False, env={"CHUNKTRAIN_KILL_AT": "save:curves.csv:3"})
    assert killed.returncode != 0, killed.stdout
    live = rows(project.path / "metrics/curves.csv")
    assert [(row["branch"], row["chunk"], row["epoch"]) for row in live] == [("c1", "c1", "1"), ("c1", "c1", "2")]
    assert json.loads((project.path / SIGNAL).read_text())["step"] == int(live[-1]["step"])
    assert (project.path / ".resume/c1/curves-before.csv").read_text() == ""  # there was none: the resume knows

    project.dvc("repro")
    final = rows(project.path / "metrics/curves.csv")  # evaluate's: branch c2, through c1's three rounds
    assert [(row["branch"], row["chunk"], row["epoch"]) for row in final] == [
        ("c2", "c1", "1"), ("c2", "c1", "2"), ("c2", "c1", "3"), ("c2", "c2", "4")]
    assert [{**row, "branch": "c1"} for row in final[:2]] == live  # the live rows were the final numbers
    assert not (project.path / SIGNAL).exists()  # removed when the chunk ended, as dvclive does
    assert "up to date" in project.dvc("status")
    # A chunk run alone puts evaluate's file back as it found it when it ends: dvc status stays clean.
    project.dvc("repro", "-f", "-s", "train@c2")
    assert rows(project.path / "metrics/curves.csv") == final and "up to date" in project.dvc("status")


def test_while_a_chunk_trains_the_chart_keeps_the_branches_that_do_not_pass_through_it(tmp_path):
    path = tmp_path / "curves.csv"
    write_rows(path, tree_curves(["c2", "c3"], {"c2": [record("c1", 1), record("c2", 2)],
                                                "c3": [record("c1", 1), record("c3", 2)]}))
    assert {row["branch"] for row in other_branches(path, "c3")} == {"c2"}  # c3 retrains: its old line goes
    assert {row["branch"] for row in other_branches(path, "c1")} == set()  # every branch passes through c1
    assert {row["branch"] for row in other_branches(path, "c4")} == {"c2", "c3"}  # a new chunk: both stay
    assert other_branches(tmp_path / "none.csv", "c1") == []  # before the first evaluate


def record(chunk: str, epoch: int) -> dict:
    return {"chunk": chunk, "step": epoch * 10, "epoch": epoch, "train_loss": 0.5, "val_loss": 0.6, "lr": 0.01}


@pytest.mark.parametrize("files, cpus", [
    ({"cgroup": "0::/job\n", "job/cpu.max": "150000 100000\n"}, 1),  # cgroup v2, a quota of 1.5 CPUs
    ({"cgroup": "0::/a/b\n", "a/cpu.max": "100000 100000\n", "a/b/cpu.max": "max 100000\n"}, 1),  # an ancestor's
    ({"cgroup": "0::/\n", "cpu.max": "max 100000\n"}, None),  # no quota: the affinity
    ({"cgroup": "2:cpu,cpuacct:/docker/x\n", "cpu,cpuacct/docker/x/cpu.cfs_quota_us": "100000\n",
      "cpu,cpuacct/docker/x/cpu.cfs_period_us": "100000\n"}, 1),  # cgroup v1
    ({"cgroup": "1:cpu:/\n", "cpu/cpu.cfs_quota_us": "-1\n", "cpu/cpu.cfs_period_us": "100000\n"}, None),
])
def test_threads_default_to_the_cpus_a_process_may_use_not_the_hosts_cores(tmp_path, files, cpus):
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    affinity = len(os.sched_getaffinity(0))
    assert available_cpus(tmp_path, tmp_path / "cgroup") == min(cpus or affinity, affinity)


def test_threads_are_set_and_recorded_in_the_checkpoints_lineage(stages, params, monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    before = torch.get_num_threads()
    try:
        auto = ckpt.load_checkpoint(stages.train("c1"))[ckpt.LINEAGE]
        assert auto["threads"] == available_cpus()
        params["train"]["threads"] = 1
        write_params(stages.params_path, params)
        one = ckpt.load_checkpoint(stages.train("c1"))[ckpt.LINEAGE]
        assert one["threads"] == 1 and torch.get_num_threads() == 1
        # The same recipe on another thread count is another lineage: a snapshot of one never resumes the other.
        assert one["id"] != auto["id"] and {k: v for k, v in one.items() if k not in ("id", "threads")} == {
            k: v for k, v in auto.items() if k not in ("id", "threads")}
    finally:
        torch.set_num_threads(before)
