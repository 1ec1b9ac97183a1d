"""The DVC remote: push from one clone, pull into a fresh one, and training continues there."""

from pathlib import Path

import pytest

from chunktrain.recipe.checkpoint import EPOCH, HISTORY, LINEAGE, load_checkpoint
from chunktrain.testing import Project, ran, sha256

OUTPUTS = ["data/dataset/train.parquet", "data/dataset/val.parquet", "data/dataset/test.parquet",
           *(f"data/checkpoints/{name}.pt" for name in ("init", "c1", "c2", "c3")),
           "metrics/curves.csv", "metrics/chunks.json"]


def use_remote(project: Project, url: Path) -> None:
    """Point the shipped default remote at url in .dvc/config.local, as a user overrides it."""
    project.dvc("remote", "modify", "--local", "storage", "url", str(url))


@pytest.mark.slow
def test_the_default_remote_is_a_local_folder_beside_the_project(reproduced):
    project, _ = reproduced
    # Resolved relative to .dvc/, so the url `../../chunktrain-storage` lands beside the project folder.
    listed = project.dvc("remote", "list", env={"COLUMNS": "1000"})  # not wrapped at 80, whatever the temp path
    assert listed.split()[:3] == ["storage", str(project.path.parent / "chunktrain-storage"), "(default)"]


@pytest.mark.slow
def test_a_pulled_clone_reproduces_nothing_and_continues_training_from_the_pulled_checkpoint(project, tmp_path):
    use_remote(project, tmp_path / "remote")
    project.dvc("push", "--run-cache")
    project.run("git", "clone", "-q", str(project.path), str(tmp_path / "clone"))  # as on another machine
    clone = Project(tmp_path / "clone")
    use_remote(clone, tmp_path / "remote")
    clone.dvc("pull", "--run-cache")

    assert clone.status() == {}
    assert ran(clone.dvc("repro")) == set()
    assert {path: sha256(clone.path / path) for path in OUTPUTS} == {path: sha256(project.path / path)
                                                                     for path in OUTPUTS}

    clone.edit_params(lambda params: params["train"]["chunks"].update(c4={"from": "c3", "epochs": 1}))
    assert clone.repro() == {"plan", "train@c4", "evaluate"}
    c3, c4 = (load_checkpoint(clone.path / f"data/checkpoints/{name}.pt") for name in ("c3", "c4"))
    assert c4[LINEAGE]["parent"] == c3[LINEAGE]["id"]
    assert c4[EPOCH] == 7 and [record["epoch"] for record in c4[HISTORY]] == [1, 2, 3, 4, 5, 6, 7]
