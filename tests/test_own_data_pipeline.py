"""An own table through real `dvc repro`: a classifier on a CSV that `dvc add` tracks, and what reruns for it."""

import copy
import json

import pandas as pd
import pytest

from chunktrain.data.specs import SYNTHETIC_SOURCE
from chunktrain.testing import TINY_PARAMS, Project, new_project, ran
from tables import classification_table, own_params, write_table

TABLE = "data/classes.csv"
STAGES = {"plan", "synthesize", "generate", "init", "train@c1", "evaluate"}
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def classifier(tmp_path_factory) -> tuple[Project, str]:
    """The tiny pipeline, one chunk, on a classification CSV that `dvc add` tracks: (project, `dvc repro` output)."""
    params = own_params(copy.deepcopy(TINY_PARAMS), "classification", TABLE)
    params["train"]["chunks"] = {"c1": {"from": "init", "epochs": 2}}
    project = new_project(tmp_path_factory.mktemp("own") / "repo", params)
    write_table(project.path / TABLE, "classification")
    project.dvc("add", TABLE)
    project.commit("table")
    output = project.dvc("repro")
    project.commit("reproduced")
    return project, output


def test_a_classifier_on_an_own_table_runs_through_dvc(classifier):
    project, output = classifier
    assert ran(output) == STAGES
    (workspace,) = json.loads(project.dvc("metrics", "show", "--json")).values()
    best = workspace["data"]["metrics/best.json"]["data"]
    assert best["chunk"] == "c1" and best["test_accuracy"] > 0.8 and best["test_cross_entropy"] > 0
    assert project.status() == {}


def test_replacing_the_table_reruns_every_stage_after_it(classifier, tmp_path):
    project = classifier[0].copy(tmp_path / "repo")
    write_table(project.path / TABLE, "classification", classification_table(seed=5))
    project.dvc("add", TABLE)
    assert project.repro() == STAGES - {"plan", "synthesize"}


def test_synthesize_writes_an_empty_table_and_its_params_rerun_nothing_with_an_own_table(classifier, tmp_path):
    """Nothing reads the synthetic table here: its stage writes no rows, and seed and synthetic.* do not rerun it."""
    project = classifier[0].copy(tmp_path / "repo")
    assert pd.read_parquet(project.path / SYNTHETIC_SOURCE).shape == (0, 0)
    project.edit_params(lambda p: p["synthetic"].update(n_samples=500))
    assert project.repro() == {"plan"}
    project.edit_params(lambda p: p.update(seed=1))
    assert project.repro() == STAGES - {"synthesize"}
    project.edit_params(lambda p: p["data"].update(source=SYNTHETIC_SOURCE, target="y", features=None) or
                        p["model"].update(task="regression"))
    assert project.repro() == STAGES
    assert len(pd.read_parquet(project.path / SYNTHETIC_SOURCE)) == 500
