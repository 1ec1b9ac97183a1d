"""Fixtures: tiny params, stage inputs on temp paths, and the project copied into a temp git repo."""

import copy

import pytest

from chunktrain.testing import TINY_PARAMS, Project, new_project


@pytest.fixture
def params() -> dict:
    """A fresh copy of the tiny params, to edit."""
    return copy.deepcopy(TINY_PARAMS)


@pytest.fixture(scope="session")
def reproduced(tmp_path_factory) -> tuple[Project, str]:
    """The tiny pipeline after one `dvc repro`, committed; with that repro's output. Tests only read it."""
    project = new_project(tmp_path_factory.mktemp("reproduced") / "repo", TINY_PARAMS)
    output = project.dvc("repro")
    project.commit("reproduced")
    return project, output


@pytest.fixture
def project(reproduced, tmp_path) -> Project:
    """A private copy of the reproduced pipeline, cache included, for a test to edit."""
    return reproduced[0].copy(tmp_path / "repo")


@pytest.fixture
def stages(tmp_path, params) -> Project:
    """Tiny data and an init checkpoint on temp paths, ready for train()."""
    stages = new_project(tmp_path, params, git=False)
    stages.generate()
    stages.init()
    return stages
