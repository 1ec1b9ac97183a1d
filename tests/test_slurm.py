"""train.launcher slurm against a real SLURM on 127.0.0.1 (tests/slurm_cluster.py): munged, slurmctld and slurmd.

A chunk through SLURM equals the chunk run here byte for byte; one longer than its time limit finishes over
several jobs, byte-identical; a cancelled job leaves its snapshot for `dvc repro`; every failure is one line.
"""

import copy
import os
import subprocess
import time

import pytest

from chunktrain.testing import TINY_PARAMS, Project, new_project, ran, sha256, wait_for
from slurm_cluster import PARTITION, require_slurm, start_cluster, stop_cluster

pytestmark = pytest.mark.slow

# A model of the user's own (src/models/), an MLP that sleeps in each training forward pass while
# CHUNKTRAIN_TEST_SLEEP is set: a chunk as slow as a test needs, with the same bytes as without the sleep.
SLOW_MODEL = """\
import os
import time

from torch import nn


class Slow(nn.Sequential):
    def forward(self, x):
        if self.training:
            time.sleep(float(os.environ.get("CHUNKTRAIN_TEST_SLEEP", "0")))
        return super().forward(x)


def build(inputs, outputs, *, width):
    return Slow(nn.Linear(inputs, width), nn.ReLU(), nn.Linear(width, outputs))
"""


@pytest.fixture(scope="session")
def slurm(tmp_path_factory):
    """The cluster, with SLURM_CONF pointing the commands (sbatch, scontrol, ...) at it for the whole session."""
    require_slurm()
    cluster = start_cluster(tmp_path_factory.mktemp("slurm") / "cluster")
    saved = os.environ.get("SLURM_CONF")
    os.environ["SLURM_CONF"] = str(cluster.conf)
    try:
        yield cluster
    finally:
        stop_cluster(cluster)
        if saved is None:
            os.environ.pop("SLURM_CONF", None)
        else:
            os.environ["SLURM_CONF"] = saved


def slurm_project(path, launcher="slurm", **slurm) -> Project:
    """The tiny project with the slow model and one chunk c1, run as SLURM jobs with the `slurm` settings."""
    params = copy.deepcopy(TINY_PARAMS)
    params["model"] = {"task": "regression", "arch": "models.slow:build", "args": {"width": 16}}
    params["train"].update(launcher=launcher, chunks={"c1": {"from": "init", "epochs": 2}},
                           slurm={"partition": PARTITION, "time": 10, "signal_lead": 30, **slurm})
    project = new_project(path, params)
    (project.path / "src/models/slow.py").write_text(SLOW_MODEL)
    project.commit("slow model")
    return project


def checkpoint(project: Project) -> str:
    return sha256(project.path / "data/checkpoints/c1.pt")


@pytest.fixture(scope="session")
def local_c1(tmp_path_factory) -> str:
    """The sha256 of chunk c1's checkpoint run here, uninterrupted."""
    project = slurm_project(tmp_path_factory.mktemp("local") / "repo", launcher="local")
    project.dvc("repro")
    return checkpoint(project)


def test_a_chunk_through_slurm_equals_the_chunk_run_here_and_the_launcher_reruns_nothing(slurm, tmp_path, local_c1):
    project = slurm_project(tmp_path / "repo")
    output = project.dvc("repro")
    assert "train@c1: submitted job" in output and "train@c1 epoch 2/2" in output  # the job's output, streamed
    assert not (project.path / ".resume/c1").exists()  # the job's output file went with the snapshot's folder
    assert checkpoint(project) == local_c1
    project.commit("reproduced")
    project.edit_params(lambda p: p["train"].update(launcher="local"))
    project.edit_params(lambda p: p["train"]["slurm"].update(time="2:00:00"))
    assert ran(project.dvc("repro")) == {"plan"}
