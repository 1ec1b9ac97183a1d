"""Fixtures: tiny params, stage inputs on temp paths, and the project copied into a temp git repo."""

import copy
import os

import pytest

from chunktrain.testing import TINY_PARAMS, Project, new_project

# `make test` runs two test processes on this 2-core machine: one torch thread in each of them and in every stage
# they start, or the threads of tiny models wait on each other. A test of the default count unsets it.
os.environ.setdefault("OMP_NUM_THREADS", "1")


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


def pytest_collection_modifyitems(items):
    """The SLURM tests first: they take the longest file (about 4 minutes, most of it waiting on the scheduler), so
    under `--dist loadfile` one worker starts them at once while the other takes the rest."""
    items.sort(key=lambda item: item.path.name != "test_slurm.py")
