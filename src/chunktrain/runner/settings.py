"""How a chunk runs, as params.yaml's train section sets it: threads, snapshots, the launcher. None of it changes
a result, so no stage depends on it and editing it reruns nothing but stage plan, which validates it. The runner
reads it from params.yaml itself (TrainParams.run), when the chunk starts."""

import re

from pydantic import Field, model_validator

from chunktrain.recipe.errors import brief
from chunktrain.recipe.specs import Section

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
    nodes: int = Field(default=1, gt=0)  # the chunk's nproc processes split evenly over them, one torchrun each
    cpus_per_task: int | None = Field(default=None, gt=0)  # CPUs per node for its processes; None: SLURM's default
    gpus_per_node: int | None = Field(default=None, gt=0)
    time: str | int = "1:00:00"  # each job's wall-time limit, in SLURM's format (a number is minutes)
    signal_lead: int = Field(default=300, gt=0)  # seconds before the limit that SLURM tells the trainer to stop
    sbatch_args: list[str] = []  # more sbatch options, e.g. ["--qos=long", "--constraint=a100"]
    srun_args: list[str] = []  # more srun options for the one torchrun per node of a multi-node chunk
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
