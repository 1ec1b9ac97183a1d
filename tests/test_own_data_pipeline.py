"""An own table through real `dvc repro`: a classifier, with the rerun rules, resume after kill -9 and DDP."""

import copy
import json

import pytest

from chunktrain import checkpoint as ckpt
from chunktrain.checkpoint import load_checkpoint
from chunktrain.testing import ALL_STAGES, TINY_PARAMS, new_project, ran, sha256
from tables import classification_table, own_params, write_table

TABLE = "data/classes.csv"
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def classifier(tmp_path_factory):
    """The tiny pipeline on a classification CSV that `dvc add` tracks; tests below run in order on it."""
    params = own_params(copy.deepcopy(TINY_PARAMS), "classification", TABLE)
    params["train"]["snapshot_every_steps"] = 10
    project = new_project(tmp_path_factory.mktemp("own") / "repo", params)
    write_table(project.path / TABLE, "classification")
    project.dvc("add", TABLE)
    project.commit("table")
    output = project.dvc("repro")
    project.commit("reproduced")
    return project, output


def test_a_classifier_runs_through_dvc(classifier):
    project, output = classifier
    assert ran(output) == ALL_STAGES
    best = json.loads(project.dvc("metrics", "show", "--json"))[""]["data"]["metrics/best.json"]["data"]
    assert best["test_accuracy"] > 0.8 and "test_cross_entropy" in best
    assert ran(project.dvc("repro")) == set()


def test_kill_9_then_repro_resumes_a_classifier_bit_identical(classifier):
    project, _ = classifier
    uninterrupted = sha256(project.path / "data/checkpoints/c2.pt")
    killed = project.run("dvc", "repro", "--force", "--single-item", "train@c2", check=False,
                         env={"CHUNKTRAIN_KILL_AT": "step:25"})
    assert killed.returncode != 0 and not (project.path / "data/checkpoints/c2.pt").exists()
    resumed = project.run("dvc", "repro", "--force", "--single-item", "train@c2")
    assert "resuming c2 from step 20" in resumed.stdout
    assert sha256(project.path / "data/checkpoints/c2.pt") == uninterrupted


def test_a_two_process_classifier_chunk_matches_one_process(classifier):
    project, _ = classifier
    project.edit_params(lambda p: p["train"]["chunks"].update(d2={"from": "c1", "epochs": 2, "nproc": 2}))
    assert ran(project.dvc("repro")) == {"validate", "train@d2", "evaluate"}
    c2, d2 = (load_checkpoint(project.path / f"data/checkpoints/{name}.pt", rebuild="-") for name in ("c2", "d2"))
    for one, two in zip(c2[ckpt.HISTORY], d2[ckpt.HISTORY]):
        assert two["train_loss"] == pytest.approx(one["train_loss"], rel=1e-5)
        assert two["val_loss"] == pytest.approx(one["val_loss"], rel=1e-5)


def test_replacing_the_table_reruns_everything_and_nothing_else_does(classifier):
    project, _ = classifier
    project.append(project.path / "params.yaml", "# a comment\n")
    assert ran(project.dvc("repro")) == {"validate"}
    write_table(project.path / TABLE, "classification", classification_table(seed=5))
    project.dvc("add", TABLE)
    assert ran(project.dvc("repro")) == ALL_STAGES - {"validate", "train-code"} | {"train@d2"}
    assert ran(project.dvc("repro")) == set()
