"""How a chunk runs on its machine: the charts follow it while it trains, and its threads fit the CPUs it may use."""

import csv
import json
import os

import pytest
import torch

from chunktrain.recipe import checkpoint as ckpt
from chunktrain.runner import trainer
from chunktrain.runner.processes import available_cpus
from chunktrain.testing import TINY_PARAMS, new_project, sha256, write_params

SIGNAL = ".dvc/tmp/exps/run/DVCLIVE_STEP_COMPLETED"  # what dvclive writes for the VS Code extension
LIVE = "metrics/live.csv"  # the chunk in training's rows of the charts


def rows(path) -> list[dict]:
    with open(path, newline="") as file:
        return list(csv.DictReader(file))


@pytest.mark.slow
def test_the_charts_follow_a_chunk_in_its_own_live_file_and_evaluates_file_is_never_touched(tmp_path):
    params = {**TINY_PARAMS, "train": {**TINY_PARAMS["train"], "chunks": {"c1": {"from": "init", "epochs": 3},
                                                                        "c2": {"from": "c1", "epochs": 1}}}}
    project = new_project(tmp_path / "repo", params)
    header = (project.path / LIVE).read_text()
    # Killed while c1 writes the live rows for the third time: the file holds what the plots drew after round 2.
    killed = project.run("dvc", "repro", check=False, env={"CHUNKTRAIN_KILL_AT": "save:live.csv:3"})
    assert killed.returncode != 0, killed.stdout
    live = rows(project.path / LIVE)
    assert [(row["branch"], row["chunk"], row["epoch"]) for row in live if row["val_loss"]] == [
        ("c1 (training)", "c1", "1"), ("c1 (training)", "c1", "2")]  # the rounds' last steps
    assert [int(row["step"]) for row in live] == list(range(1, 51))  # and every step's lr
    assert json.loads((project.path / SIGNAL).read_text())["step"] == int(live[-1]["step"])
    assert not (project.path / "metrics/curves.csv").exists()  # evaluate's output: no chunk writes it

    project.dvc("repro")
    final = rows(project.path / "metrics/curves.csv")  # evaluate's: branch c2, through c1's three rounds
    assert [(row["branch"], row["chunk"], row["epoch"]) for row in final if row["val_loss"]] == [
        ("c2", "c1", "1"), ("c2", "c1", "2"), ("c2", "c1", "3"), ("c2", "c2", "4")]
    assert [{**row, "branch": "c1 (training)"} for row in final[:50]] == live  # the live rows were the final numbers
    assert not (project.path / SIGNAL).exists()  # removed when the chunk ended, as dvclive does
    assert (project.path / LIVE).read_text() == header  # as git holds it: nothing for git or an experiment to commit
    assert project.run("git", "status", "--porcelain", LIVE).stdout == ""
    curves = (project.path / "metrics/curves.csv").stat().st_mtime_ns
    project.dvc("repro", "-f", "-s", "train@c2")
    assert (project.path / "metrics/curves.csv").stat().st_mtime_ns == curves and project.status() == {}
    plots = json.loads(project.dvc("plots", "show", "--json"))
    assert "errors" not in json.dumps(plots)  # the empty live file is no missing source


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
        # The same recipe on another thread count is another lineage, since the last bits may differ.
        assert one["id"] != auto["id"] and {k: v for k, v in one.items() if k not in ("id", "threads")} == {
            k: v for k, v in auto.items() if k not in ("id", "threads")}
    finally:
        torch.set_num_threads(before)


def test_a_chunk_resumed_with_another_thread_count_keeps_the_one_it_started_with(stages, params, monkeypatch, capsys):
    """A SLURM job resubmitted to a node of another size, or a resume on another machine: the snapshot is used, and
    the chunk ends with the bytes it would have had uninterrupted (tests/test_slurm.py runs it through SLURM)."""
    params["train"].update(threads=1, snapshot_every_steps=10, snapshot_every_seconds=None)
    write_params(stages.params_path, params)
    before = torch.get_num_threads()
    try:
        uninterrupted = sha256(stages.train("c1"))
        stages.checkpoint("c1").unlink()
        with monkeypatch.context() as patch:
            patch.setattr(trainer, "crash_point", crash_at(35))
            with pytest.raises(Crash):
                stages.train("c1")
        params["train"]["threads"] = 2
        write_params(stages.params_path, params)
        capsys.readouterr()
        assert sha256(stages.train("c1")) == uninterrupted
        out = capsys.readouterr().out
        assert "c1: 1 threads per process, as the snapshot was taken with (2 otherwise here)" in out
        assert "resuming c1 from step 30" in out
    finally:
        torch.set_num_threads(before)


class Crash(Exception):
    """Stands in for a kill between two steps."""


def crash_at(n: int):
    reached = []

    def crash_point(name: str) -> None:
        reached.append(name)
        if len(reached) == n:
            raise Crash()

    return crash_point


@pytest.mark.slow
def test_a_stop_signal_after_the_last_step_lets_the_chunk_write_its_outputs_and_complete(tmp_path):
    """SIGTERM while c1 writes its checkpoint (CHUNKTRAIN_KILL_SIGNAL: the signal comes at that very moment): the
    chunk has trained all it should, so it writes its outputs and ends complete, bytes those of an undisturbed run.
    tests/test_slurm.py does the same for SLURM's SIGUSR1 in each phase of writing the outputs."""
    project = new_project(tmp_path / "repo", TINY_PARAMS)
    project.dvc("repro", "train@c1")
    undisturbed = sha256(project.path / "data/checkpoints/c1.pt")
    output = project.dvc("repro", "-f", "-s", "train@c1",
                         env={"CHUNKTRAIN_KILL_AT": "save:c1.pt:1", "CHUNKTRAIN_KILL_SIGNAL": "TERM"})
    assert "train@c1: SIGTERM came after the last step; the chunk's outputs are written and it is complete" in output
    assert sha256(project.path / "data/checkpoints/c1.pt") == undisturbed
    assert not (project.path / ".resume/c1").exists() and "train@c1" not in project.status()


def test_the_header_says_the_lr_the_chunk_trains_with_and_when_it_starts_past_the_schedule(stages, params, capsys):
    """A linear decay to 0.001 at epoch 4 (25 steps an epoch): c1 falls from the peak, c2 nearly to min_lr, where c3
    trains."""
    params["train"]["schedule"] = {"warmup": 0.0, "decay": "linear", "total": 4, "min_lr": 0.001}
    write_params(stages.params_path, params)
    stages.init()
    for chunk in ("c1", "c2", "c3"):
        stages.train(chunk)
    output = capsys.readouterr().out
    assert "train@c1: epochs 1..2 from data/checkpoints/init.pt, lr 0.01 to 0.00559, batch size 64" in output
    assert "train@c2: epochs 3..4 from data/checkpoints/c1.pt, lr 0.0055 to 0.00109, batch size 64" in output
    assert ("train@c3: epochs 5..6 from data/checkpoints/c2.pt, lr 0.001 (past train.schedule.total 4: every step"
            " at min_lr; to train on at a higher lr, see README, \"Extending a run\"), batch size 64") in output
