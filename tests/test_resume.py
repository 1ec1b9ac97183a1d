"""An interrupted chunk resumes where it stopped and ends bit-identical: real `dvc repro`, real kills."""

import os
import signal
import subprocess
import sys
import time

import psutil
import pytest
import torch

from chunktrain.recipe import checkpoint as ckpt
from chunktrain.recipe.checkpoint import load_checkpoint
from chunktrain.runner import snapshots
from chunktrain.recipe.snapshot import RESUME, position_problem
from chunktrain.runner.snapshots import SnapshotSchedule
from chunktrain.testing import Project, Started, project_env, ran, sha256, wait_for

SNAPSHOT = ".resume/c2/snapshot.pt"
C2 = "data/checkpoints/c2.pt"
# Tiny params: 1600 training rows in batches of 64 are 25 steps an epoch; c2 trains epochs 3 and 4.


def snapshot_every_10_steps(project: Project, **c2) -> None:
    """A snapshot every 10 steps (the tiny params take none), and c2's own settings updated with `c2`."""
    def edit(params: dict) -> None:
        params["train"]["snapshot_every_steps"] = 10
        params["train"]["chunks"]["c2"].update(c2)
    project.edit_params(edit)


def rerun_c2(project: Project, env: dict | None = None) -> subprocess.CompletedProcess:
    """Train c2 again. Forced: dvc.lock records its earlier run, so plain `dvc repro` would restore that run's
    outputs from the cache (it trains a chunk killed on its first run)."""
    return project.run("dvc", "repro", "-f", "-s", "train@c2", check=False, env=env)


@pytest.fixture(scope="module")
def killed(reproduced, tmp_path_factory) -> tuple[Project, str]:
    """The reproduced pipeline with a snapshot every 10 steps, after `kill -9` of train@c2 at step 35:
    (project, c2's uninterrupted sha256)."""
    project = reproduced[0].copy(tmp_path_factory.mktemp("killed") / "repo")
    uninterrupted = sha256(project.path / C2)
    snapshot_every_10_steps(project)
    assert project.repro() == {"plan"}  # snapshots change no result: nothing else reruns
    assert rerun_c2(project, env={"CHUNKTRAIN_KILL_AT": "step:35"}).returncode != 0
    return project, uninterrupted


@pytest.fixture
def interrupted(killed, tmp_path) -> tuple[Project, str]:
    """A private copy of the killed project: (project, c2's uninterrupted sha256)."""
    project, uninterrupted = killed
    return project.copy(tmp_path / "repo"), uninterrupted


@pytest.mark.slow
def test_kill_9_mid_chunk_then_repro_resumes_and_ends_bit_identical(interrupted):
    project, uninterrupted = interrupted
    assert not (project.path / C2).exists() and (project.path / SNAPSHOT).is_file()
    resumed = rerun_c2(project)
    assert resumed.returncode == 0 and "resuming c2 from step 30 of the chunk" in resumed.stdout
    assert sha256(project.path / C2) == uninterrupted
    assert not (project.path / ".resume/c2").exists()
    assert project.status() == {}  # c3 and evaluate see the same c2


@pytest.mark.slow
def test_a_corrupt_snapshot_is_skipped_with_a_warning(interrupted):
    project, uninterrupted = interrupted
    snapshot = project.path / SNAPSHOT
    snapshot.write_bytes(snapshot.read_bytes()[:1000])
    output = rerun_c2(project).stdout
    assert f"warning: skipping corrupt snapshot {SNAPSHOT}" in output and "resuming" not in output
    assert sha256(project.path / C2) == uninterrupted


@pytest.mark.slow
def test_a_snapshot_saved_again_with_other_weights_is_not_resumed_from(interrupted):
    """Loaded, its weights scaled, saved whole by torch.save with its lineage and position kept (probe 31): a
    consistent file whose CRC-32s are right, but not the tensors its sha256 was taken of."""
    project, uninterrupted = interrupted
    snapshot = dict(load_checkpoint(project.path / SNAPSHOT))
    snapshot[ckpt.MODEL_STATE] = {key: value * 100 for key, value in snapshot[ckpt.MODEL_STATE].items()}
    torch.save(snapshot, project.path / "edited.pt")  # not over the file its tensors are memory-mapped from
    os.replace(project.path / "edited.pt", project.path / SNAPSHOT)
    output = rerun_c2(project).stdout
    assert (f"warning: skipping corrupt snapshot {SNAPSHOT}: {SNAPSHOT} was changed after it was written (its tensors"
            " are not those its sha256 was taken of") in output and "resuming" not in output
    assert sha256(project.path / C2) == uninterrupted


@pytest.mark.slow
@pytest.mark.parametrize("edit, problem", [
    ({"epoch": 99}, "its position (round 99, batch 5) is outside the chunk (rounds 3..4, 25 batches each)"),
    ({"batch": 26}, "its position (round 4, batch 26) is outside the chunk"),
    ({"step": 3}, "its step 3 and round 3 disagree with its position (round 4, batch 5)"),
])
def test_a_snapshot_whose_position_cannot_belong_to_the_chunk_is_refused(killed, edit, problem):
    project, _ = killed
    snapshot = load_checkpoint(project.path / SNAPSHOT)
    parent = load_checkpoint(project.path / "data/checkpoints/c1.pt")
    assert position_problem(snapshot, parent, rounds=2, steps_per_round=25) is None
    snapshot[RESUME] = {**snapshot[RESUME], **edit}
    assert position_problem(snapshot, parent, rounds=2, steps_per_round=25).startswith(problem)


@pytest.mark.slow
def test_the_snapshots_command_lists_and_clears(interrupted):
    project, _ = interrupted
    command = [sys.executable, "-m", "chunktrain.runner.snapshots"]
    listed = project.run(*command, env={"PYTHONPATH": "src"}).stdout
    assert listed.startswith(f"{SNAPSHOT}: step 30 of the chunk (epoch 4, batch 5)")
    assert "deleted 1 snapshot(s) under .resume" in project.run(*command, "--clear", env={"PYTHONPATH": "src"}).stdout
    assert not (project.path / ".resume/c2").exists()


@pytest.mark.slow
def test_a_killed_writers_temp_file_changes_neither_dvc_nor_git(project):
    (project.path / "data/checkpoints/.c3.pt.999999999.abc.tmp").write_bytes(b"partial")
    assert project.status() == {}
    assert project.run("git", "status", "--porcelain").stdout == ""


def start_repro(project: Project, *args: str) -> Started:
    """`dvc repro` in its own process group, as from a terminal."""
    return Started(["dvc", "repro", *args], cwd=project.path, env=project_env())


@pytest.mark.slow
def test_ctrl_c_writes_a_snapshot_and_repro_resumes_from_it(project):
    snapshot_every_10_steps(project, epochs=10)  # 250 steps: long enough to be caught mid-chunk
    dvc = start_repro(project, "train@c2")
    try:
        wait_for(lambda: (project.path / SNAPSHOT).exists() or dvc.poll() is not None, "the first snapshot")
        os.killpg(dvc.pid, signal.SIGINT)  # what Ctrl-C in a terminal does: the whole process group
        output = dvc.finish(timeout=120).stdout
    finally:
        dvc.kill_group()
    assert dvc.returncode != 0
    assert "error: train@c2 interrupted at step" in output and "`dvc repro` resumes from it" in output
    assert "Traceback" not in output
    resumed = project.dvc("repro", "train@c2")
    assert "resuming c2 from step" in resumed and ran(resumed) == {"train@c2"}


@pytest.mark.slow
def test_a_trainer_whose_dvc_is_killed_snapshots_and_stops(project):
    uninterrupted = sha256(project.path / C2)
    snapshot_every_10_steps(project, epochs=300)
    dvc = start_repro(project, "train@c2")
    try:
        wait_for(lambda: (project.path / SNAPSHOT).exists() or dvc.poll() is not None, "the first snapshot")
        trainer = next(child for child in psutil.Process(dvc.pid).children(recursive=True)
                       if "src/train.py" in " ".join(child.cmdline()))
        killed_at = time.time()
        dvc.kill()  # dvc alone, as `kill -9 <dvc pid>` would: its stage is left behind
        dvc.wait()
        trainer.wait(timeout=60)  # it notices within a second or so and stops; psutil raises if it lives on
    finally:
        dvc.kill_group()  # the trainer too, if it lived on
    assert (project.path / SNAPSHOT).stat().st_mtime >= killed_at  # its last act: a snapshot
    assert not (project.path / C2).exists()

    # Back to 2 epochs: the snapshot of the 300-epoch run is another spec's, so it is not used.
    project.edit_params(lambda p: p["train"]["chunks"]["c2"].update(epochs=2))
    project.dvc("repro", "plan")
    output = rerun_c2(project).stdout
    assert f"skipping snapshot {SNAPSHOT}: it was taken with another spec" in output and "resuming" not in output
    assert sha256(project.path / C2) == uninterrupted


def test_time_based_snapshots_keep_their_cost_under_two_percent(monkeypatch):
    clock = [100.0]
    monkeypatch.setattr(snapshots.time, "monotonic", lambda: clock[0])
    schedule = SnapshotSchedule(every_steps=None, every_seconds=1.0)
    clock[0] += 1.0
    assert schedule.due(step=7)
    started, clock[0] = clock[0], clock[0] + 0.1
    schedule.taken(started)  # a 0.1 s snapshot: the next one waits 5 s, not 1 s
    clock[0] += 2.0
    assert not schedule.due(step=8)
    clock[0] += 3.0
    assert schedule.due(step=9)


def test_step_based_snapshots_fall_on_multiples():
    schedule = SnapshotSchedule(every_steps=10, every_seconds=None)
    assert [step for step in range(1, 31) if schedule.due(step)] == [10, 20, 30]
