"""train.launcher slurm against a real SLURM on 127.0.0.1 (tests/slurm_cluster.py): munged, slurmctld and slurmd.

A chunk through SLURM equals the chunk run here byte for byte; a job stopped at its time limit or signalled
before it leaves a snapshot that the next job resumes, byte-identical, on another CPU count too; a cancelled job
leaves its snapshot for `dvc repro`; every failure is one line.
"""

import copy
import json
import os
import re
import signal
import sys
import threading
import time
from pathlib import Path

import plan
import pytest

from chunktrain.params import Params, load_params
from chunktrain.recipe.errors import PipelineError
from chunktrain.runner import slurm
from chunktrain.runner.settings import SlurmParams, slurm_seconds
from chunktrain.testing import (TINY_PARAMS, Project, Started, new_project, project_env, ran, sha256, stop_queue,
                                wait_for, write_params)
from slurm_cluster import PARTITION, SHORT, require_slurm, start_cluster, stop_cluster

slow = pytest.mark.slow

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
def cluster(tmp_path_factory):
    """The cluster, with SLURM_CONF pointing the commands (sbatch, scontrol, ...) at it for the whole session."""
    require_slurm()
    started = start_cluster(tmp_path_factory.mktemp("slurm") / "cluster")
    saved = os.environ.get("SLURM_CONF")
    os.environ["SLURM_CONF"] = str(started.conf)
    try:
        yield started
    finally:
        stop_cluster(started)
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


@slow
def test_a_chunk_through_slurm_equals_the_chunk_run_here_and_the_launcher_reruns_nothing(cluster, tmp_path, local_c1):
    project = slurm_project(tmp_path / "repo")
    output = project.dvc("repro")
    assert "train@c1: submitted job" in output and "train@c1 epoch 2/2" in output  # the job's output, streamed
    assert not (project.path / ".resume/c1").exists()  # the job's output file went with the snapshot's folder
    assert checkpoint(project) == local_c1
    project.commit("reproduced")
    project.edit_params(lambda p: p["train"].update(launcher="local"))
    project.edit_params(lambda p: p["train"]["slurm"].update(time="2:00:00"))
    assert ran(project.dvc("repro")) == {"plan"}


def repro_fails(project: Project, *args: str, env: dict | None = None) -> tuple[str, str]:
    """`dvc repro` that must fail: the stage's error line (the last: a job's own come first), and the output."""
    result = project.run("dvc", "repro", *args, check=False, env=env)
    assert result.returncode != 0, result.stdout
    errors = [line for line in result.stdout.splitlines() if line.startswith("error: ")]
    assert errors, result.stdout
    return errors[-1], result.stdout


def jobs_in(output: str) -> list[str]:
    return re.findall(r"train@c1: submitted job (\d+)", output)


@slow
def test_a_chunk_on_two_processes_in_a_job_equals_it_run_here(cluster, tmp_path):
    """nproc 2: srun starts both trainers, which meet as torchrun's would; a CPU each, as here."""
    project = slurm_project(tmp_path / "repo", launcher="local", cpus_per_task=1)
    project.edit_params(lambda p: p["train"].update(nproc=2))
    project.dvc("repro")
    here = checkpoint(project)
    project.edit_params(lambda p: p["train"].update(launcher="slurm"))
    project.dvc("repro", "plan")
    output = project.dvc("repro", "-f", "-s", "train@c1")
    assert "train@c1: submitted job" in output and "2 processes" in output
    assert checkpoint(project) == here


@slow
def test_a_job_past_its_time_limit_leaves_a_snapshot_that_a_job_of_another_size_resumes_byte_identical(
        cluster, tmp_path, local_c1):
    """SLURM looks at time limits every 30 s: with --time=1 and a lead of 20 s, its signal comes 10 to 40 s into the
    job, and training sleeps 1 s a step, 50 s in all. With max_restarts 0 the job's stop ends `dvc repro`. The first
    job is granted one CPU, the next the node's (the thread count follows the job, no OMP_NUM_THREADS): the chunk
    keeps the thread count it started with, so its bytes are those of the chunk run here on one thread."""
    project = slurm_project(tmp_path / "repo", time=1, signal_lead=20, max_restarts=0, cpus_per_task=1)
    any_threads = {"OMP_NUM_THREADS": ""}
    line, output = repro_fails(project, env={**any_threads, "CHUNKTRAIN_TEST_SLEEP": "1"})
    assert re.fullmatch(r"error: train@c1: job \d+ stopped at its time limit \(time 1\) after 0 restart\(s\),"
                        r" train.slurm.max_restarts; its snapshot is kept in .resume/c1: raise train.slurm.time or"
                        r" max_restarts and run `dvc repro`", line), line
    assert len(jobs_in(output)) == 1 and (project.path / ".resume/c1/snapshot.pt").exists()

    project.edit_params(lambda p: p["train"]["slurm"].pop("cpus_per_task"))
    output = project.dvc("repro", env=any_threads)
    assert "resuming c1 from step" in output
    threads = len(os.sched_getaffinity(0))
    if threads > 1:  # the first job's trainer was granted one CPU; this one takes the node's
        assert f"c1: 1 threads per process, as the snapshot was taken with ({threads} otherwise here)" in output
    assert checkpoint(project) == local_c1  # OMP_NUM_THREADS=1 (conftest.py): one thread


def start_repro(project: Project, sleep: str) -> Started:
    """`dvc repro` in its own process group, as a terminal runs it, training `sleep` seconds a step."""
    return Started(["dvc", "repro"], cwd=project.path, env={**project_env(), "CHUNKTRAIN_TEST_SLEEP": sleep})


def training_job(cluster, project: Project, first: str) -> str:
    """The chunk's job once its trainer prints `first` (and a few steps more)."""
    wait_for(lambda: any(first in path.read_text() for path in (project.path / ".resume/c1").glob("slurm-*.out")),
             "the job to start training")
    time.sleep(2)
    [job] = cluster.jobs()
    return job


@slow
def test_a_job_signalled_before_its_time_limit_is_submitted_again_and_resumes_within_one_repro(
        cluster, tmp_path, local_c1):
    """SIGUSR1 to the job's batch shell is what SLURM sends before the time limit (--signal=B:USR1@lead) or a
    preemption with a grace signal: every trainer writes the snapshot and stops, and the stage submits the job again."""
    project = slurm_project(tmp_path / "repo")
    repro = start_repro(project, "0.2")
    try:
        job = training_job(cluster, project, "epochs 1..2")
        cluster.run("scancel", "--batch", "--signal=USR1", job)
        output = repro.finish(timeout=120).stdout
    finally:
        repro.kill_group()
    assert repro.returncode == 0, output
    assert f"train@c1: job {job} stopped at its time limit or by a preemption; submitting restart 1" in output
    assert len(jobs_in(output)) == 2 and "resuming c1 from step" in output
    assert checkpoint(project) == local_c1


@slow
def test_a_cancelled_job_or_ctrl_c_keeps_the_snapshot_and_dvc_repro_resumes(cluster, tmp_path, local_c1):
    """`scancel` of the job, then Ctrl-C where the next `dvc repro` runs (which cancels its job): each time the
    trainer writes its snapshot, and the last `dvc repro` ends with the bytes of the chunk run here."""
    project = slurm_project(tmp_path / "repo")
    for stop in ("scancel", "ctrl-c"):
        repro = start_repro(project, "0.2")
        try:
            job = training_job(cluster, project, "epochs 1..2" if stop == "scancel" else "resuming c1")
            if stop == "scancel":
                cluster.run("scancel", job)
            else:
                os.killpg(repro.pid, signal.SIGINT)  # what Ctrl-C in a terminal does: the whole process group
            output = repro.finish(timeout=120).stdout
        finally:
            repro.kill_group()
        assert repro.returncode != 0
        assert (f"error: train@c1: job {job} was cancelled (scancel); its snapshot is kept in .resume/c1:"
                " `dvc repro` resumes from it" if stop == "scancel" else
                f"error: train@c1 stopped by SIGINT and its job {job} cancelled; `dvc repro` resumes from its"
                " snapshot") in output, output
        assert (project.path / ".resume/c1/snapshot.pt").exists() and cluster.jobs() == []
    resumed = project.dvc("repro")
    assert "resuming c1 from step" in resumed
    assert checkpoint(project) == local_c1


@slow
def test_a_job_still_queued_or_running_for_the_chunk_is_not_submitted_twice(cluster, tmp_path):
    """Its stage was killed, say: a second job would write the same snapshot."""
    project = slurm_project(tmp_path / "repo")
    job = cluster.run("sbatch", "--parsable", "--job-name=train@c1", f"--chdir={project.path}", "--output=/dev/null",
                      "--wrap", "sleep 600").strip()
    try:
        line, _ = repro_fails(project)
    finally:
        cluster.run("scancel", job)
    assert line == (f"error: train@c1: job {job} of this chunk in this folder is still queued or running; wait for"
                    f" it to end or `scancel {job}`, then run `dvc repro` again")


@slow
@pytest.mark.parametrize("slurm_settings, env, message", [
    ({"partition": "nope"}, {},
     r"error: train@c1: sbatch refused the job: Batch job submission failed: Invalid partition name specified"
     r" \(see train.slurm in params.yaml\)"),
    ({"partition": SHORT, "time": "2:00:00"}, {},
     r"error: train@c1: job \d+ can never start: SLURM says PartitionTimeLimit \(it asks for more than its partition"
     r" or account allows; see train.slurm in params.yaml\)"),
    ({}, {"CHUNKTRAIN_KILL_AT": "step:3"},
     r"error: train@c1: job \d+ failed on node1 \(killed by SIGKILL\); its output is in"
     r" .resume/c1/slurm-\d+.out and any snapshot is kept: `dvc repro` resumes from it"),
], ids=["unknown-partition", "over-the-partition-time-limit", "failed-on-its-node"])
def test_a_job_that_cannot_run_or_fails_is_one_line(cluster, tmp_path, slurm_settings, env, message):
    project = slurm_project(tmp_path / "repo", **slurm_settings)
    line, _ = repro_fails(project, env=env)
    assert re.fullmatch(message, line), line
    assert cluster.jobs() == []  # none left pending


def test_no_sbatch_here_is_one_line(stages, params, monkeypatch):
    """Without SLURM's commands on PATH (dvc repro run off the cluster), the stage says so; no daemons needed."""
    params["train"]["launcher"] = "slurm"
    write_params(stages.params_path, params)
    monkeypatch.setenv("PATH", str(Path(sys.executable).parent))
    with pytest.raises(PipelineError, match=r"^train@c1: train.launcher is slurm, but sbatch is not on PATH here;"
                                            r" run `dvc repro` on a login node of the cluster, or set"
                                            r" train.launcher: local$"):
        stages.train("c1")



@slow
def test_the_queue_runs_two_experiments_chunks_as_two_jobs_at_once(cluster, tmp_path):
    project = slurm_project(tmp_path / "repo", launcher="local")
    project.dvc("repro")
    project.commit("reproduced here")
    for name, lr in (("fast", 0.02), ("slow", 0.005)):
        project.dvc("exp", "run", "--queue", "-n", name, "-S", "train.launcher=slurm", "-S", f"train.lr={lr}")
    running, done = [], threading.Event()

    def watch() -> None:  # the jobs running at each moment
        while not done.is_set():
            running.append(set(cluster.run("squeue", "-h", "-t", "R", "-o", "%i").split()))
            time.sleep(0.2)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        # Waits for both experiments, not for the workers: DVC can leave one running for good (see stop_queue).
        project.dvc("exp", "run", "--run-all", "-j", "2", env={"CHUNKTRAIN_TEST_SLEEP": "0.3"}, timeout=500)
    finally:
        done.set()
        watcher.join()
        stop_queue(project)
    assert max(len(jobs) for jobs in running) == 2
    shown = json.loads(project.dvc("exp", "show", "--json"))
    names = {experiment["name"] for commit in shown for experiment in commit.get("experiments") or []}
    assert {"fast", "slow"} <= names


# The settings: checked by stage plan, kept out of the chunks' specs. No daemons needed.

def test_slurm_settings_change_no_spec_and_follow_the_chunk_tree(tmp_path, params):
    params["train"].update(launcher="slurm", slurm={"time": "2:00:00", "nodes": 2}, nproc=2)
    params["train"]["chunks"]["c3"].update(launcher="local")
    params["train"]["chunks"]["c2"].update(slurm={"time": "1-12", "partition": "long"})
    loaded = Params.model_validate(params)
    assert loaded.train.run("c1").slurm.time == "2:00:00" and loaded.train.run("c3").slurm is None
    assert loaded.train.run("c2").slurm.model_dump(include={"time", "partition", "nodes"}) == {
        "time": "1-12", "partition": "long", "nodes": 2}
    without = copy.deepcopy(params)
    without["train"].pop("launcher"), without["train"].pop("slurm")
    for chunk in without["train"]["chunks"].values():
        chunk.pop("launcher", None), chunk.pop("slurm", None)
    assert ({name: spec.text() for name, spec in plan.plan(loaded).items() if name != "run.json"}
            == {name: spec.text() for name, spec in plan.plan(Params.model_validate(without)).items()
                if name != "run.json"})  # run.json: how chunks run, which no stage depends on


@pytest.mark.parametrize("time, seconds", [(1, 60), ("90", 5400), ("1:30", 90), ("2:00:00", 7200), ("1-12", 129600),
                                           ("1-0:30", 88200), ("1-0:0:5", 86405)])
def test_slurm_time_formats(time, seconds):
    assert slurm_seconds(time) == seconds


@pytest.mark.parametrize("edit, message", [
    (lambda t: t["slurm"].update(time="1h"), "train.slurm.time: '1h' is not a SLURM time limit"),
    (lambda t: t["slurm"].update(time=1, signal_lead=60),
     "train.slurm.signal_lead: 60 s leaves no time to train in a job of time 1"),
    (lambda t: t["slurm"].update(nodes=2), "train.slurm.nodes: chunk c1's 1 processes (nproc) do not split evenly"),
    (lambda t: t["slurm"].update(partion="gpu"), "train.slurm.partion: unknown key, did you mean 'partition'?"),
    (lambda t: t["chunks"]["c2"].update(slurm={"max_restarts": -1}),
     "train.chunks.c2.slurm: max_restarts: Input should be greater than or equal to 0, got -1"),
])
def test_a_bad_slurm_setting_is_one_line(tmp_path, params, edit, message):
    params["train"].update(launcher="slurm", slurm={})
    edit(params["train"])
    with pytest.raises(PipelineError, match=re.escape(message)):
        load_params(write_params(tmp_path / "params.yaml", params))


def test_a_job_starts_the_trainer_once_per_process_meeting_on_the_first_node():
    settings = SlurmParams(nodes=2, gpus_per_node=4, cpus_per_task=8, partition="gpu", sbatch_args=["--qos=long"],
                           srun_args=["--cpu-bind=none"])
    script = slurm.job_script(settings, ["python", "-m", "chunktrain.runner.trainer", "c1"], nproc=8)
    assert script.splitlines() == [
        "#!/bin/sh",
        'export MASTER_ADDR="$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)"'
        " MASTER_PORT=$((20000 + SLURM_JOB_ID % 10000))",
        "exec srun --ntasks-per-node=4 --kill-on-bad-exit=1 --cpu-bind=none sh -c 'export RANK=$SLURM_PROCID"
        " LOCAL_RANK=$SLURM_LOCALID WORLD_SIZE=$SLURM_NTASKS LOCAL_WORLD_SIZE=$SLURM_NTASKS_PER_NODE; exec \"$@\"'"
        " trainer python -m chunktrain.runner.trainer c1"]
    args = slurm.sbatch_args(settings, 8, "train@c1", Path("logs"))
    assert {"--nodes=2", "--ntasks-per-node=4", "--gpus-per-node=4", "--cpus-per-task=8", "--partition=gpu",
            "--time=1:00:00", "--signal=B:USR1@300", "--qos=long"} <= set(args)
    one = slurm.job_script(SlurmParams(), ["python", "-m", "chunktrain.runner.trainer", "c1"], nproc=1)
    assert one.splitlines()[1:] == ["exec srun --ntasks-per-node=1 --kill-on-bad-exit=1 python -m"
                                    " chunktrain.runner.trainer c1"]


@slow
@pytest.mark.parametrize("phase", ["save:c1.pt:1", "save:c1.json:3", "clear:1"],
                         ids=["writing-the-checkpoint", "writing-the-metrics", "removing-the-snapshot"])
def test_slurms_warning_after_the_last_step_lets_the_job_write_the_outputs_and_complete(cluster, tmp_path, local_c1,
                                                                                          phase):
    """SLURM's SIGUSR1 in each phase after c1's last step (timed there by CHUNKTRAIN_KILL_SIGNAL; the metrics are
    also written after each of the two rounds): the trainer writes every output, and its job completes; no second
    job starts over."""
    project = slurm_project(tmp_path / "repo")
    output = project.dvc("repro", env={"CHUNKTRAIN_KILL_AT": phase, "CHUNKTRAIN_KILL_SIGNAL": "USR1"})
    assert "train@c1: SIGUSR1 came after the last step; the chunk's outputs are written and it is complete" in output
    assert len(jobs_in(output)) == 1 and "restart" not in output
    assert checkpoint(project) == local_c1 and not (project.path / ".resume/c1").exists()
    assert json.loads((project.path / "metrics/train/c1.json").read_text())["epoch"] == 2
