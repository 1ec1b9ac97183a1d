"""How a chunk runs, as params.yaml's train section sets it: threads, snapshots, the launcher. None of it changes
a result, so it enters no stage's spec: stage plan writes it, validated, to one file, data/plan/run.json, which the
runner reads when a chunk starts and no stage depends on. Editing it reruns nothing but stage plan."""

import re

from pydantic import Field, model_validator

from chunktrain.recipe.errors import PipelineError, brief
from chunktrain.recipe.specs import Section, Spec

SLURM_TIME = re.compile(r"(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?")  # M, M:S, H:M:S, D-H, D-H:M, D-H:M:S


def slurm_seconds(value: str | int) -> int:
    """SLURM's --time in seconds: minutes, minutes:seconds, hours:minutes:seconds, days-hours[:minutes[:seconds]]."""
    match = SLURM_TIME.fullmatch(str(value))
    if not match:
        raise ValueError(f"train.slurm.time: {brief(value)} is not a SLURM time limit (minutes, H:MM:SS or"
                         " D-HH:MM:SS)")
    days, first, second, third = (None if part is None else int(part) for part in match.groups())
    if days is not None:  # D-H[:M[:S]]
        hours, minutes, seconds = first, second or 0, third or 0
    elif third is not None:  # H:M:S
        hours, minutes, seconds = first, second, third
    else:  # M[:S]
        hours, minutes, seconds = 0, first, second or 0
    return (((days or 0) * 24 + hours) * 60 + minutes) * 60 + seconds


class SlurmParams(Section):
    """train.launcher slurm: each chunk is a job, submitted again from its snapshot when its time runs out."""

    partition: str | None = None  # None: the cluster's default partition
    account: str | None = None
    nodes: int = Field(default=1, gt=0)  # the chunk's nproc processes split evenly over them
    cpus_per_task: int | None = Field(default=None, gt=0)  # CPUs per process (an srun task); None: SLURM's default
    gpus_per_node: int | None = Field(default=None, gt=0)
    time: str | int = "1:00:00"  # each job's wall-time limit, in SLURM's format (a number is minutes)
    signal_lead: int = Field(default=300, gt=0)  # seconds before the limit that SLURM tells the trainer to stop
    sbatch_args: list[str] = []  # more sbatch options, e.g. ["--qos=long", "--constraint=a100"]
    srun_args: list[str] = []  # more srun options, e.g. ["--cpu-bind=cores"]
    max_restarts: int = Field(default=20, ge=0)  # jobs after the first, per `dvc repro` of the chunk

    @model_validator(mode="after")
    def _lead_inside_the_limit(self) -> "SlurmParams":
        if self.signal_lead >= slurm_seconds(self.time):
            raise ValueError(f"train.slurm.signal_lead: {self.signal_lead} s leaves no time to train in a job of"
                             f" time {self.time!r}; it must be shorter than the time limit")
        return self


class RunSettings(Section):
    """How one chunk runs: train's keys of the runner, with the chunk's own launcher and slurm overrides applied."""

    threads: int | None  # torch threads per process; None: its CPUs shared by its node's processes
    snapshot_every_steps: int | None  # None: no step-based snapshots
    snapshot_every_seconds: float | None  # None: no time-based snapshots
    slurm: SlurmParams | None  # the chunk's SLURM job; None: it runs here


class RunPlan(Spec):
    """data/plan/run.json: how each chunk runs. Like the specs, it is replaced only once params.yaml passes, so a
    refused params.yaml leaves the last good settings for a chunk that DVC runs anyway (--ignore-errors)."""

    chunks: dict[str, RunSettings]

    def of(self, name: str, path) -> RunSettings:
        if name not in self.chunks:
            raise PipelineError(f"{path} has no chunk {name!r}; run `dvc repro` (stage plan writes it)")
        return self.chunks[name]
