"""Hostile input, round two (issue 21): foreign and tampered checkpoints, the snapshots command, full and
read-only disks. Each through the command a user types, asserting what lands on disk."""

import os
import re
import shutil
import struct
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import torch

from chunktrain.recipe.checkpoint import LINEAGE, CheckpointError, load_checkpoint
from chunktrain.testing import Project, new_project, run, sha256
from chunktrain.recipe import snapshot as snapshots
from chunktrain.recipe.loop import Position

slow = pytest.mark.slow
CHECKPOINTS = ("init", "c1", "c2", "c3")


def errors(output: str) -> list[str]:
    return [line for line in output.splitlines() if line.startswith("error: ")]


def hashes(project: Project, folder: str = "data/checkpoints", pattern: str = "*.pt") -> dict[str, str]:
    """sha256 of every file under `folder` whose name matches `pattern`."""
    root = project.path / folder
    return {str(path.relative_to(root)): sha256(path) for path in sorted(root.rglob(pattern)) if path.is_file()}


def refused(result: subprocess.CompletedProcess) -> list[str]:
    """The error lines of a command that must fail in one line, without a traceback."""
    assert result.returncode != 0, result.stdout
    assert "Traceback" not in result.stdout, result.stdout
    return errors(result.stdout)


# Damage 3: foreign and mismatched checkpoints, a stage run alone.

@pytest.fixture(scope="module")
def other_seed(tmp_path_factory, reproduced) -> Path:
    """The checkpoints of the tiny params with `seed: 1` (the project's are seed 0)."""
    params = reproduced[0].params
    params["seed"] = 1
    stages = new_project(tmp_path_factory.mktemp("seed1"), params, git=False)
    stages.generate()
    stages.init()
    for chunk in CHECKPOINTS[1:]:
        stages.train(chunk)
    return stages.root / "data/checkpoints"


@slow
def test_evaluate_run_alone_refuses_checkpoints_of_another_seed(project, other_seed):
    for name in CHECKPOINTS[1:]:  # the chunks alone: init is ours
        shutil.copy(other_seed / f"{name}.pt", project.path / "data/checkpoints")
    assert refused(project.run("dvc", "repro", "-s", "evaluate", check=False)) == [
        "error: data/checkpoints/c1.pt does not match params.yaml: init.seed is 1 in the file, 0 in params.yaml;"
        " run `dvc repro train@c1` to rebuild it"]
    shutil.copy(other_seed / "init.pt", project.path / "data/checkpoints")  # and all four
    assert refused(project.run("dvc", "repro", "-f", "-s", "evaluate", check=False)) == [
        "error: data/checkpoints/init.pt does not match params.yaml: seed is 1 in the file, 0 in params.yaml;"
        " run `dvc repro init` to rebuild it"]
    copied = {f"{name}.pt": sha256(other_seed / f"{name}.pt") for name in CHECKPOINTS}
    assert hashes(project) == copied  # refused, not deleted
    assert not (project.path / "metrics/chunks.json").exists()  # and nothing scored


@slow
def test_a_chunk_run_alone_refuses_an_init_of_another_seed(project, other_seed):
    shutil.copy(other_seed / "init.pt", project.path / "data/checkpoints")
    assert refused(project.run("dvc", "repro", "-f", "-s", "train@c1", check=False)) == [
        "error: data/checkpoints/init.pt does not match params.yaml: seed is 1 in the file, 0 in params.yaml;"
        " run `dvc repro init` to rebuild it"]
    assert sha256(project.path / "data/checkpoints/init.pt") == sha256(other_seed / "init.pt")
    assert not (project.path / "data/checkpoints/c1.pt").exists()  # DVC removed it to rebuild it; none trained


@slow
def test_a_data_edit_run_stage_by_stage_stops_at_the_first_checkpoint_of_the_old_data(project):
    project.edit_params(lambda p: p["synthetic"].update(noise=1.0))
    for stage in ("plan", "synthesize", "generate"):
        project.dvc("repro", "-s", stage)
    init = sha256(project.path / "data/checkpoints/init.pt")
    assert refused(project.run("dvc", "repro", "-f", "-s", "evaluate", check=False)) == [
        "error: data/checkpoints/init.pt was made from another dataset than data/dataset/ holds now;"
        " run `dvc repro init` to rebuild it"]
    assert refused(project.run("dvc", "repro", "-f", "-s", "train@c1", check=False)) == [
        "error: data/checkpoints/init.pt was made from another dataset than data/dataset/ holds now;"
        " run `dvc repro init` to rebuild it"]
    assert sha256(project.path / "data/checkpoints/init.pt") == init
    project.dvc("repro", "-s", "init")  # the command named; then c1 trains on the new data
    project.dvc("repro", "-s", "train@c1")
    c1 = load_checkpoint(project.path / "data/checkpoints/c1.pt")
    assert c1["transform"] == load_checkpoint(project.path / "data/checkpoints/init.pt")["transform"]


# Damage 4: a checkpoint changed in place, same size, mtime kept: DVC does not see it, its consumers do.

def tamper(path: Path) -> None:
    """Overwrite the first tensor's bytes in place (same size, same inode), then restore the mtime."""
    stat = path.stat()
    with zipfile.ZipFile(path) as archive:
        record = next(info for info in archive.infolist() if "/data/" in info.filename)
    with open(path, "r+b") as file:
        file.seek(record.header_offset + 26)
        name, extra = struct.unpack("<HH", file.read(4))
        file.seek(record.header_offset + 30 + name + extra)
        file.write(struct.pack("<f", 0.5) * (record.file_size // 4))
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert path.stat().st_size == stat.st_size and path.stat().st_ino == stat.st_ino


def test_a_checkpoint_changed_in_place_is_refused_on_load(stages, tmp_path):
    stages.train("c1")
    path = tmp_path / "c2.pt"
    shutil.copy(stages.train("c2"), path)
    load_checkpoint(path, "train@c2")
    tamper(path)
    for stage in ("train@c2", ""):  # a stage's load, or predict's and sample's: the command from its lineage
        with pytest.raises(CheckpointError) as raised:
            load_checkpoint(path, stage)
        assert str(raised.value) == (f"{path} was changed after it was written (Bad CRC-32 for file 'archive/data/0');"
                                     " run `dvc repro -f -s train@c2` to rebuild it")


def test_a_checkpoint_loaded_edited_and_saved_again_is_refused_on_load(stages, tmp_path):
    """torch.save writes CRC-32s of its own: the weights x3 with the lineage kept (probe 59) pass the CRC check, not
    the sha256 save_checkpoint took of the tensors."""
    stages.train("c1")
    path = stages.train("c2")
    checkpoint = dict(load_checkpoint(path))
    checkpoint["model_state_dict"] = {key: value * 3 for key, value in checkpoint["model_state_dict"].items()}
    torch.save(checkpoint, tmp_path / "edited.pt")  # not over the file its tensors are memory-mapped from
    os.replace(tmp_path / "edited.pt", path)
    with pytest.raises(CheckpointError, match=re.escape(
            f"{path} was changed after it was written (its tensors are not those its sha256 was taken of: loaded,"
            " edited and saved again?); run `dvc repro -f -s train@c2` to rebuild it")):
        load_checkpoint(path, "train@c2")


@slow
def test_a_checkpoint_changed_in_place_is_refused_by_every_consumer_and_the_command_named_rebuilds_it(project):
    c2 = project.path / "data/checkpoints/c2.pt"
    original = sha256(c2)
    assert project.status() == {}  # DVC has hashed the files of this copy
    tamper(c2)
    assert project.status() == {}  # its state keys on inode, mtime and size: it does not see the change
    problem = ("error: data/checkpoints/c2.pt was changed after it was written (Bad CRC-32 for file"
               " 'archive/data/0'); run `dvc repro -f -s train@c2` to rebuild it")
    predict = [sys.executable, "src/predict.py", "--checkpoint", "data/checkpoints/c2.pt", "--export", "c2.pt2"]
    assert refused(project.run(*predict, check=False)) == [problem]
    assert refused(project.run("dvc", "repro", "-f", "-s", "evaluate", check=False)) == [problem]
    project.edit_params(lambda p: p["train"]["chunks"]["c3"].update(epochs=3))  # a child trains from it
    assert refused(project.run("dvc", "repro", check=False)) == [problem]
    assert not (project.path / "c2.pt2").exists() and not (project.path / "metrics/chunks.json").exists()

    project.dvc("repro", "-f", "-s", "train@c2")  # the command the line names
    assert sha256(c2) == original
    project.dvc("repro")
    assert project.status() == {}


@slow
def test_a_same_size_code_edit_with_the_mtime_kept_refuses_nothing_and_is_recorded(project):
    """DVC misses the edit; the chunk that runs next records the code it ran, and nothing asks for a command
    that DVC would answer with "up to date"."""
    assert project.status() == {}  # DVC has hashed the files of this copy
    path = project.path / "src/chunktrain/recipe/chunk.py"
    stat, text = path.stat(), path.read_bytes()
    edited = text.replace(b"One chunk of the recipe", b"ONE CHUNK OF THE RECIPE", 1)
    assert edited != text and len(edited) == len(text)
    with open(path, "r+b") as file:
        file.write(edited)
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    project.edit_params(lambda p: p["train"]["chunks"]["c3"].update(epochs=3))
    result = project.run("dvc", "repro", check=False)
    assert result.returncode == 0 and not errors(result.stdout), result.stdout
    assert "Running stage 'train@c2'" not in result.stdout  # DVC missed the edit
    c2, c3 = (load_checkpoint(project.path / f"data/checkpoints/{name}.pt")[LINEAGE] for name in ("c2", "c3"))
    assert c3["parent"] == c2["id"] and c3["code"] != c2["code"], result.stdout


# Damage 5: the snapshots command deletes snapshots and nothing else.

@slow
def test_clear_snapshots_deletes_only_snapshots_in_the_snapshot_folder(project):
    command = [sys.executable, "-m", "chunktrain.runner.snapshots"]
    env = {"PYTHONPATH": "src"}
    data = hashes(project, "data", "*")
    result = project.run(*command, "--clear", "data", env=env)
    assert "deleted 0 snapshot(s) under data" in result.stdout
    assert hashes(project, "data", "*") == data  # every checkpoint and table still there, unchanged

    c1 = load_checkpoint(project.path / "data/checkpoints/c1.pt")
    snapshot = project.path / ".resume/c2/snapshot.pt"
    snapshots.save_snapshot(snapshot, c1, Position(epoch=3, step=c1["global_step"] + 5, batch=5), step=5)
    (project.path / ".resume/c3").mkdir()
    shutil.copy(project.path / "data/checkpoints/c2.pt", project.path / ".resume/c3/snapshot.pt")  # not one
    (project.path / ".resume/c2/notes.txt").write_text("mine")
    listed = project.run(*command, "--clear", env=env).stdout
    assert ".resume/c3/snapshot.pt: not a snapshot, left alone" in listed
    assert "deleted 1 snapshot(s) under .resume" in listed
    assert not snapshot.exists()
    assert (project.path / ".resume/c3/snapshot.pt").is_file() and (project.path / ".resume/c2/notes.txt").is_file()


# Faults: a full disk, a read-only folder, a file where the snapshot folder should be.

def can_mount() -> bool:
    return bool(shutil.which("unshare")) and run(["unshare", "--user", "--map-root-user", "--mount", "true"],
                                                 check=False, timeout=60).returncode == 0


def snapshot_every_10_steps(project: Project) -> None:
    project.edit_params(lambda p: p["train"].update(snapshot_every_steps=10))
    project.dvc("repro", "plan")


@slow
@pytest.mark.skipif(not can_mount(), reason="needs `unshare` with user namespaces, to mount a tmpfs")
@pytest.mark.parametrize("folder, file, problem", [
    ("data/checkpoints", "c1.pt", "No space left on device"),  # the checkpoint, after the last round
    ("metrics/train", "c1.json", "No space left on device"),  # the metrics, after a round
    ("data/checkpoints", "c1.pt", "Read-only file system"),
])
def test_a_full_or_read_only_disk_is_one_line_and_the_snapshot_survives_for_the_rerun(project, tmp_path, folder,
                                                                                      file, problem):
    """In a mount namespace of its own, `folder` becomes a full tmpfs (the files the stage reads copied in) or a
    read-only bind mount, for one `dvc repro`; the mount vanishes with it."""
    c1 = sha256(project.path / "data/checkpoints/c1.pt")
    snapshot_every_10_steps(project)
    killed = project.run("dvc", "repro", "-f", "-s", "train@c1", check=False, env={"CHUNKTRAIN_KILL_AT": "step:35"})
    assert killed.returncode != 0 and (project.path / ".resume/c1/snapshot.pt").is_file()
    shutil.copytree(project.path / folder, tmp_path / "saved")
    if problem == "Read-only file system":
        mount = f"mount --bind {folder} {folder} && mount -o remount,bind,ro {folder}"
    else:
        mount = (f"mount -t tmpfs -o size=64k tmpfs {folder} && cp {tmp_path}/saved/* {folder}/ &&"
                 f" {{ dd if=/dev/zero of={folder}/.fill bs=4k 2>/dev/null; true; }}")
    full = project.run("unshare", "--user", "--map-root-user", "--mount", "sh", "-c",
                       f"{mount} && exec dvc repro -f -s train@c1", check=False)
    assert refused(full) == [f"error: cannot write {folder}/{file}: {problem}"]
    assert (project.path / ".resume/c1/snapshot.pt").is_file()  # the work done so far
    assert "resuming c1 from step" in project.dvc("repro", "-f", "-s", "train@c1")  # -f: not the run cache
    assert sha256(project.path / "data/checkpoints/c1.pt") == c1


NOT_WRITTEN = "warning: train@c1: snapshot at step {} not written to .resume/c1/snapshot.pt ({}); training goes on"


@slow
@pytest.mark.parametrize("place, warnings", [
    (".resume", [NOT_WRITTEN.format(step, "Not a directory") for step in range(10, 51, 10)]),
    (".resume/c1.lock", []),  # where the writer lock was: nothing reads it now
    (".resume/c1/snapshot.pt", [*(NOT_WRITTEN.format(step, "Is a directory") for step in range(10, 51, 10)),
                                "warning: .resume/c1/snapshot.pt is a folder, not a snapshot; left alone"]),
])
def test_a_file_or_folder_in_the_snapshots_place_is_a_warning_and_training_goes_on(project, place, warnings):
    c1 = sha256(project.path / "data/checkpoints/c1.pt")
    snapshot_every_10_steps(project)
    if place == ".resume":
        shutil.rmtree(project.path / place, ignore_errors=True)  # the empty folder earlier chunks left
        (project.path / place).write_text("not a folder")
    else:
        (project.path / place).mkdir(parents=True)
    result = project.run("dvc", "repro", "-f", "-s", "train@c1", check=False)
    assert result.returncode == 0 and "Traceback" not in result.stdout, result.stdout
    assert [line for line in result.stdout.splitlines() if "warning" in line] == warnings
    assert sha256(project.path / "data/checkpoints/c1.pt") == c1
    assert (project.path / place).exists()


# A forged parent that kept a real lineage record: train refuses it in one line before building anything.

@pytest.mark.parametrize("forge, problem", [
    (lambda ckpt: ckpt["model_config"].update(arch="evil"), "holds no usable model"),
    (lambda ckpt: ckpt["model_config"]["args"].update(hidden=[3]), "do not fit its model"),
    (lambda ckpt: ckpt.update(model_state_dict={}), "do not fit its model"),
])
def test_a_forged_parent_with_a_real_lineage_is_one_line(stages, forge, problem):
    from chunktrain.recipe.checkpoint import save_checkpoint
    from chunktrain.recipe.errors import PipelineError

    path = stages.train("c1")
    checkpoint = dict(load_checkpoint(path))
    forge(checkpoint)
    save_checkpoint(checkpoint, path)  # a consistent file: its CRCs are right, only its contents lie
    with pytest.raises(PipelineError, match=problem):
        stages.train("c2")
    assert not stages.checkpoint("c2").exists()
