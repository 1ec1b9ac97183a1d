"""The DVC remote: push from one clone, pull into a fresh one, and training continues there."""

import json
from pathlib import Path

import pytest

from chunktrain.checkpoint import EPOCH, HISTORY, PARENT_SHA256, load_checkpoint
from chunktrain.testing import Project, ran, sha256


def use_remote(project: Project, url: Path) -> None:
    """Point the shipped default remote at url in .dvc/config.local, as a user overrides it."""
    project.dvc("remote", "modify", "--local", "storage", "url", str(url))


@pytest.mark.slow
def test_default_remote_is_a_local_folder_beside_the_project(project):
    # Resolved relative to .dvc/, so the url `../../chunktrain-storage` lands beside the project folder.
    listed = project.dvc("remote", "list", env={"COLUMNS": "1000"})  # not wrapped at 80, whatever the temp path
    assert listed.split()[:3] == ["storage", str(project.path.parent / "chunktrain-storage"), "(default)"]


def git_clone(project: Project, path: Path, remote: Path) -> Project:
    """A fresh clone, as on another machine: git files only, no DVC cache, the remote at remote."""
    project.run("git", "clone", "-q", str(project.path), str(path))
    clone = Project(path)
    use_remote(clone, remote)
    return clone


@pytest.fixture
def pulled(project, tmp_path) -> tuple[Project, Project]:
    """The reproduced project pushed to a temp remote, and a fresh clone of it that pulled."""
    use_remote(project, tmp_path / "remote")
    project.dvc("push", "--run-cache")
    clone = git_clone(project, tmp_path / "clone", tmp_path / "remote")
    clone.dvc("pull", "--run-cache")
    return project, clone


@pytest.mark.slow
def test_a_pulled_clone_is_up_to_date_and_reproduces_nothing(pulled):
    origin, clone = pulled
    assert "Data and pipelines are up to date." in clone.dvc("status")
    assert ran(clone.dvc("repro")) == set()
    for name in ("init", "c1", "c2", "c3"):
        path = f"data/checkpoints/{name}.pt"
        assert sha256(clone.path / path) == sha256(origin.path / path)


@pytest.mark.slow
def test_a_chunk_appended_on_the_clone_continues_from_the_pulled_checkpoint(pulled):
    _, clone = pulled
    parent = clone.path / "data/checkpoints/c3.pt"
    parent_sha256 = sha256(parent)
    params = clone.params
    params["train"]["chunks"]["c4"] = {"from": "c3", "epochs": 1}
    clone.params = params

    assert ran(clone.dvc("repro")) == {"validate", "train@c4", "evaluate"}
    c4 = load_checkpoint(clone.path / "data/checkpoints/c4.pt", rebuild="")
    assert c4[PARENT_SHA256] == parent_sha256 == sha256(parent)
    assert c4[EPOCH] == 7
    assert [record["epoch"] for record in c4[HISTORY]] == [1, 2, 3, 4, 5, 6, 7]
    assert json.loads((clone.path / "metrics/train/c4.json").read_text())["epoch"] == 7


@pytest.mark.slow
def test_pull_from_a_missing_remote_fails_naming_the_missing_files(project, tmp_path):
    # DVC cannot tell a missing local remote from an empty one, so it reports the files it lacks.
    clone = git_clone(project, tmp_path / "clone", tmp_path / "no-such-remote")

    result = clone.run("dvc", "pull", check=False)

    assert result.returncode != 0
    assert "Some of the cache files do not exist neither locally nor on remote" in result.stdout
    assert "failed to pull data from the cloud" in result.stdout


@pytest.mark.slow
def test_push_to_an_unwritable_remote_fails_naming_the_path(project, tmp_path):
    # A path below a regular file cannot be created, even by root (for whom chmod would not do).
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    use_remote(project, blocker / "remote")

    result = project.run("dvc", "push", check=False)

    assert result.returncode != 0
    assert f"Not a directory: '{blocker / 'remote'}" in result.stdout
