"""An interrupted chunk resumes where it stopped and ends bit-identical: real `dvc repro`, real kills."""

import os
import signal
import subprocess
import sys
import time

import psutil
import pytest

from chunktrain import resume
from chunktrain.resume import SnapshotSchedule
from chunktrain.testing import project_env, ran, sha256, wait_for

SNAPSHOT = ".resume/c2/snapshot.pt"
# Tiny params: 1600 training rows in batches of 64 are 25 steps an epoch; c2 trains epochs 3 and 4.


@pytest.fixture
def resumable(project):
    """The reproduced tiny pipeline with a snapshot every 10 steps, and c2's uninterrupted sha256."""
    params = project.params
    params["train"]["snapshot_every_steps"] = 10  # not a stage dependency: nothing reruns for it
    project.params = params
    return project, sha256(project.path / "data/checkpoints/c2.pt")


def rerun_c2(project, kill_at: str | None = None):
    env = {"CHUNKTRAIN_KILL_AT": kill_at} if kill_at else {}
    return project.run("dvc", "repro", "--force", "--single-item", "train@c2", check=False, env=env)


@pytest.mark.slow
@pytest.mark.parametrize("kill_at, resumed_from", [
    ("step:35", "step 30 (epoch 4)"),  # mid-epoch, 5 steps after the last snapshot
    ("save:snapshot.pt:3", "step 20 (epoch 3)"),  # during the third snapshot's write: the second one counts
    ("save:c2.pt:1", "step 50 (epoch 4)"),  # during the final checkpoint's write
])
def test_kill_9_then_repro_resumes_and_ends_bit_identical(resumable, kill_at, resumed_from):
    project, uninterrupted = resumable
    killed = rerun_c2(project, kill_at)
    assert killed.returncode != 0
    assert not (project.path / "data/checkpoints/c2.pt").exists()
    assert (project.path / SNAPSHOT).is_file()
    assert len(list((project.path / SNAPSHOT).parent.iterdir())) <= 2  # a snapshot, and at most a half-written one

    resumed = rerun_c2(project)
    assert resumed.returncode == 0, resumed.stdout
    assert f"resuming c2 from {resumed_from}" in resumed.stdout
    assert sha256(project.path / "data/checkpoints/c2.pt") == uninterrupted
    assert not (project.path / ".resume/c2").exists()
    assert not list((project.path / "data/checkpoints").glob(".*.tmp"))
    assert ran(project.dvc("repro")) == {"validate"}  # for the snapshot setting; c3 and evaluate see the same c2


@pytest.mark.slow
def test_ctrl_c_writes_a_snapshot_and_says_repro_resumes(resumable):
    project, _ = resumable
    params = project.params
    params["train"]["chunks"]["c2"]["epochs"] = 30  # long enough to be caught mid-run
    project.params = params
    dvc = subprocess.Popen(["dvc", "repro", "train@c2"], cwd=project.path, env=project_env(),
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    wait_for(lambda: (project.path / SNAPSHOT).exists() or dvc.poll() is not None, "the first snapshot")
    os.killpg(dvc.pid, signal.SIGINT)  # what Ctrl-C in a terminal does: the whole process group
    output, _ = dvc.communicate(timeout=120)
    assert dvc.returncode != 0
    assert "interrupted at step" in output and "`dvc repro` resumes from it" in output
    assert "Traceback" not in output

    resumed = project.dvc("repro", "--single-item", "train@c2")
    assert "resuming c2 from step" in resumed
    interrupted_result = sha256(project.path / "data/checkpoints/c2.pt")
    project.dvc("repro", "--force", "--single-item", "train@c2")  # the same chunk, uninterrupted
    assert sha256(project.path / "data/checkpoints/c2.pt") == interrupted_result


@pytest.mark.slow
def test_sigterm_to_the_stage_writes_a_snapshot_and_exits_143(resumable):
    project, _ = resumable
    params = project.params
    params["train"]["chunks"]["c2"]["epochs"] = 30
    project.params = params
    stage = subprocess.Popen(
        [sys.executable, "src/train.py", "--chunk", "c2", "--parent", "data/checkpoints/c1.pt",
         "--train", "data/dataset/train.parquet", "--val", "data/dataset/val.parquet",
         "--out", "out.pt", "--metrics", "out.json", "--snapshot", SNAPSHOT],
        cwd=project.path, env=project_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for(lambda: (project.path / SNAPSHOT).exists() or stage.poll() is not None, "the first snapshot")
    stage.terminate()
    _, stderr = stage.communicate(timeout=120)
    assert stage.returncode == 128 + signal.SIGTERM
    assert stderr.startswith("error: train@c2 interrupted at step") and stderr.count("\n") == 1
    assert not (project.path / "out.pt").exists()


@pytest.mark.slow
@pytest.mark.parametrize("change, reason", [
    (lambda project: project.edit_params(lambda p: p["train"]["chunks"]["c2"].update(lr=0.003)), "params"),
    (lambda project: project.append(project.path / "src/chunktrain/training.py", "\n# an edit\n"), "code"),
])
def test_a_snapshot_taken_with_other_inputs_is_never_used(resumable, change, reason):
    project, _ = resumable
    rerun_c2(project, "step:35")
    change(project)
    output = project.dvc("repro", "train@c2")  # not -s: validate or train-code carries the change to c2
    assert f"skipping snapshot {SNAPSHOT}: it was taken with another {reason}" in output
    assert "resuming" not in output


@pytest.mark.slow
def test_a_corrupt_snapshot_is_skipped_with_a_warning(resumable):
    project, uninterrupted = resumable
    rerun_c2(project, "step:35")
    snapshot = project.path / SNAPSHOT
    snapshot.write_bytes(snapshot.read_bytes()[:1000])
    output = rerun_c2(project).stdout
    assert f"warning: skipping corrupt snapshot {SNAPSHOT}" in output
    assert "resuming" not in output
    assert sha256(project.path / "data/checkpoints/c2.pt") == uninterrupted


@pytest.mark.slow
def test_the_snapshots_command_lists_and_clears(resumable):
    project, _ = resumable
    rerun_c2(project, "step:35")
    command = [sys.executable, "-m", "chunktrain.snapshots"]
    listed = project.run(*command, env={"PYTHONPATH": "src"}).stdout
    assert listed.startswith(f"{SNAPSHOT}: step 30 (epoch 4, batch 5)")
    cleared = project.run(*command, "--clear", env={"PYTHONPATH": "src"}).stdout
    assert "deleted 1 snapshot(s) under .resume" in cleared
    assert not (project.path / ".resume/c2").exists()


def test_time_based_snapshots_keep_their_cost_under_two_percent(monkeypatch):
    clock = [100.0]
    monkeypatch.setattr(resume.time, "monotonic", lambda: clock[0])
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


@pytest.mark.slow
def test_a_chunk_with_warmup_and_cosine_decay_resumes_bit_identical_after_kill_9(resumable):
    project, _ = resumable
    project.edit_params(lambda p: p["train"]["schedule"].update(warmup_epochs=0.5, decay="cosine", total_epochs=6,
                                                                min_lr=0.0005))
    project.dvc("repro")
    uninterrupted = sha256(project.path / "data/checkpoints/c2.pt")
    assert rerun_c2(project, "step:35").returncode != 0
    resumed = rerun_c2(project)
    assert "resuming c2 from step 30 (epoch 4)" in resumed.stdout
    assert sha256(project.path / "data/checkpoints/c2.pt") == uninterrupted


def forge(project, edit) -> None:
    """Rewrite the snapshot with `edit` applied to it, keeping its (valid) fingerprint."""
    from chunktrain.checkpoint import load_checkpoint, save_checkpoint

    snapshot = dict(load_checkpoint(project.path / SNAPSHOT, rebuild="-"))
    snapshot[resume.RESUME] = dict(snapshot[resume.RESUME])
    edit(snapshot)
    save_checkpoint(snapshot, project.path / SNAPSHOT)


@pytest.mark.slow
@pytest.mark.parametrize("edit, warning", [
    (lambda s: s[resume.RESUME].update(epoch=99), "its position (epoch 99, batch 5) is outside the chunk (epochs 3..4"),
    (lambda s: s[resume.RESUME].update(batch=26), "its position (epoch 4, batch 26) is outside the chunk"),
    (lambda s: s[resume.RESUME].update(step=3), "its step 3 and epoch 3 disagree with its position"),
    (lambda s: s[resume.RESUME].update(fingerprint=["not", "a", "dict"]), "its fingerprint is a list, not a dict"),
])
def test_a_snapshot_whose_position_cannot_belong_to_the_chunk_is_skipped(resumable, edit, warning):
    project, uninterrupted = resumable
    rerun_c2(project, "step:35")
    forge(project, edit)
    output = rerun_c2(project).stdout
    assert f"skipping snapshot {SNAPSHOT}" in output or f"skipping corrupt snapshot {SNAPSHOT}" in output
    assert warning in output and "resuming" not in output
    assert sha256(project.path / "data/checkpoints/c2.pt") == uninterrupted


@pytest.mark.slow
def test_a_snapshot_that_cannot_be_written_is_a_warning_not_a_failed_chunk(resumable):
    project, uninterrupted = resumable
    (project.path / ".resume").mkdir(exist_ok=True)
    (project.path / ".resume/c2").write_text("a file where the snapshot folder goes")
    result = rerun_c2(project)
    assert result.returncode == 0, result.stdout
    assert "warning: train@c2: snapshot at step 10 not written to .resume/c2/snapshot.pt" in result.stdout
    assert sha256(project.path / "data/checkpoints/c2.pt") == uninterrupted
    assert (project.path / ".resume/c2").read_text() == "a file where the snapshot folder goes"


@pytest.mark.slow
def test_a_trainer_whose_dvc_is_killed_snapshots_and_stops(resumable):
    project, uninterrupted = resumable
    project.edit_params(lambda p: p["train"]["chunks"]["c2"].update(epochs=300))
    dvc = subprocess.Popen(["dvc", "repro", "train@c2"], cwd=project.path, env=project_env(),
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        wait_for(lambda: (project.path / SNAPSHOT).exists() or dvc.poll() is not None, "the first snapshot")
        trainer = next(child for child in psutil.Process(dvc.pid).children(recursive=True)
                       if "src/train.py" in " ".join(child.cmdline()))
        killed_at = time.time()
        dvc.kill()  # dvc alone, as `kill -9 <dvc pid>` would: its stage is left behind
        dvc.wait()
        trainer.wait(timeout=60)  # it notices within a second or so and stops; psutil raises if it lives on
    finally:
        os.killpg(dvc.pid, signal.SIGKILL) if psutil.pid_exists(dvc.pid) else None
    assert (project.path / SNAPSHOT).stat().st_mtime >= killed_at  # its last act: a snapshot
    assert not (project.path / "data/checkpoints/c2.pt").exists()
    project.edit_params(lambda p: p["train"]["chunks"]["c2"].update(epochs=2))  # the snapshot is for 300 epochs
    project.dvc("repro", "validate")  # carries the edit to data/params/c2.yaml
    output = rerun_c2(project).stdout
    assert "skipping snapshot" in output and sha256(project.path / "data/checkpoints/c2.pt") == uninterrupted
