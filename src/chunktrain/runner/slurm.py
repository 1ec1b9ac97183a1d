"""train.launcher slurm: a chunk as a SLURM job, waited for, its output streamed, submitted again at its time limit.

The stage (src/train.py, where `dvc repro` runs: a login node) submits a batch job in the same folder, which the
nodes must share; in it, `srun` starts the trainer (runner/trainer.py) once per process of the chunk, its processes
meeting as torch's env:// process group on the first node. SLURM sends SIGUSR1 `signal_lead` seconds before the
job's time limit, which srun passes on to every trainer, which takes it as it takes a preemption's SIGTERM: it
writes its snapshot and exits, and the stage submits the job again, which resumes from the snapshot. The stage ends
when the last job does, so DVC sees the chunk end then. docs/slurm.md is the user's guide.
"""

import contextlib
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from chunktrain.runner.settings import SlurmParams
from chunktrain.recipe.errors import PipelineError
from chunktrain.runner.stopping import Interrupted, ParentWatch, StopSignals

POLL_FIRST, POLL_MAX = 0.25, 2.0  # seconds between looks at a job: short for a short chunk, then at most this
LEAD_SIGNAL = signal.SIGUSR1  # srun passes it on to its tasks; on SIGTERM it would kill them
# The trainer's exit after its snapshot on SIGTERM (stopping.Interrupted); also srun's for a task that either
# signal killed before the trainer was ready for it.
STOPPED_EXIT = {128 + signal.SIGTERM, 128 + LEAD_SIGNAL}
# Pending reasons that never clear by waiting: the job asks for more than its partition or account allows.
HOPELESS = {"PartitionTimeLimit", "PartitionNodeLimit", "InvalidAccount", "InvalidQOS",
            "BadConstraints", "AssocMaxWallDurationPerJobLimit", "QOSMaxWallDurationPerJobLimit"}
MASTER_PORTS = (20000, 10000)  # a job's process group meets on the first + its job id modulo the second
PATIENCE = 60  # seconds to keep asking a controller that does not answer, or to wait for a job's checkpoint


@dataclass(frozen=True)
class JobEnd:
    """How a job ended, from `scontrol show job`."""

    job: str
    state: str  # COMPLETED, FAILED, CANCELLED, TIMEOUT, PREEMPTED, NODE_FAIL, OUT_OF_MEMORY, ...
    exit_code: int  # of the batch script (srun's: the highest of its tasks')
    killed_by: int  # the signal that killed it, or 0
    nodes: str

    @property
    def stopped(self) -> bool:
        """Stopped for its time limit or a preemption (a snapshot was due), not failed or cancelled."""
        signalled = self.exit_code in STOPPED_EXIT or self.killed_by in (signal.SIGTERM, LEAD_SIGNAL)
        return self.state in ("TIMEOUT", "PREEMPTED") or self.state == "FAILED" and signalled

    def failure(self) -> str:
        """What happened to the job, in words, after "job N"."""
        if self.state == "NODE_FAIL":
            return f"lost its node {self.nodes}"
        if self.state == "OUT_OF_MEMORY":
            return f"ran out of memory on {self.nodes}"
        if self.state != "FAILED":
            return f"ended {self.state} on {self.nodes}"
        # srun reports a task killed by signal n as status 128 + n
        killed_by = self.killed_by or (self.exit_code - 128 if self.exit_code > 128 else 0)
        how = (f"killed by {signal.Signals(killed_by).name}" if killed_by in signal.valid_signals()
               else f"exit status {self.exit_code}")
        return f"failed on {self.nodes} ({how})"


def run(slurm: SlurmParams, command: list[str], *, nproc: int, name: str, log_dir: Path, out: Path) -> None:
    """Run `command` (the trainer) as `nproc` processes of SLURM jobs until one completes and `out` is here; each job
    after a stop resumes from the snapshot. Any failure is one PipelineError; the snapshot stays."""
    restarts = 0
    while True:
        job, log = submit(slurm, command, nproc, name, log_dir)
        end = wait(job, log, name)
        if end.state == "COMPLETED":
            if not _appears(out):
                raise PipelineError(f"{name}: job {job} completed, but its checkpoint {out} is not here: the project"
                                    " folder must be on a filesystem that this machine and the nodes share")
            log.unlink(missing_ok=True)  # streamed to the stage's output already
            with contextlib.suppress(OSError):
                log_dir.rmdir()  # the snapshot's folder, once the trainer has cleared its snapshot
            return
        if end.state == "CANCELLED":
            raise PipelineError(f"{name}: job {job} was cancelled (scancel); its snapshot is kept in {log_dir}:"
                                f" `dvc repro` resumes from it")
        if not end.stopped:
            raise PipelineError(f"{name}: job {job} {end.failure()}; its output is in {log} and any"
                                f" snapshot is kept: `dvc repro` resumes from it")
        if restarts == slurm.max_restarts:
            raise PipelineError(f"{name}: job {job} stopped at its time limit (time {slurm.time}) after"
                                f" {restarts} restart(s), train.slurm.max_restarts; its snapshot is kept in"
                                f" {log_dir}: raise train.slurm.time or max_restarts and run `dvc repro`")
        log.unlink(missing_ok=True)
        restarts += 1
        print(f"{name}: job {job} stopped at its time limit or by a preemption; submitting restart {restarts} of at"
              f" most {slurm.max_restarts}, which resumes from the snapshot", flush=True)


def sbatch_args(slurm: SlurmParams, nproc: int, name: str, log_dir: Path) -> list[str]:
    """sbatch's options for one job of chunk `name`."""
    optional = {"--partition": slurm.partition, "--account": slurm.account,
                "--cpus-per-task": slurm.cpus_per_task, "--gpus-per-node": slurm.gpus_per_node}
    return ["--parsable", f"--job-name={name}", f"--output={log_dir.resolve()}/slurm-%j.out",
            f"--chdir={Path.cwd()}", f"--nodes={slurm.nodes}", f"--ntasks-per-node={nproc // slurm.nodes}",
            f"--time={slurm.time}", f"--signal=B:{LEAD_SIGNAL.name.removeprefix('SIG')}@{slurm.signal_lead}",
            *(f"{option}={value}" for option, value in optional.items() if value is not None), *slurm.sbatch_args]


def job_script(slurm: SlurmParams, command: list[str], nproc: int) -> str:
    """The batch script: srun starts the command once per process. Several processes get torch's env:// variables
    from SLURM's, and meet on the first node.

    `exec` makes srun the job's batch process, so SLURM's signal before the time limit (B:) reaches srun, which
    passes it on to every process.
    """
    srun = ["srun", f"--ntasks-per-node={nproc // slurm.nodes}", "--kill-on-bad-exit=1", *slurm.srun_args]
    if nproc == 1:
        return "\n".join(["#!/bin/sh", f"exec {shlex.join([*srun, *command])}", ""])
    first, span = MASTER_PORTS
    group = ("export RANK=$SLURM_PROCID LOCAL_RANK=$SLURM_LOCALID WORLD_SIZE=$SLURM_NTASKS"
             ' LOCAL_WORLD_SIZE=$SLURM_NTASKS_PER_NODE; exec "$@"')
    # One node's processes meet on its loopback; several nodes on the first's name, as SLURM's node list has it.
    address = '127.0.0.1' if slurm.nodes == 1 else '"$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)"'
    return "\n".join(["#!/bin/sh",
                      f"export MASTER_ADDR={address} MASTER_PORT=$(({first} + SLURM_JOB_ID % {span}))",
                      f"exec {shlex.join([*srun, 'sh', '-c', group, 'trainer', *command])}", ""])


def submit(slurm: SlurmParams, command: list[str], nproc: int, name: str, log_dir: Path) -> tuple[str, Path]:
    """Submit one job: its id and its output file."""
    if not shutil.which("sbatch"):
        raise PipelineError(f"{name}: train.launcher is slurm, but sbatch is not on PATH here; run `dvc repro` on"
                            " a login node of the cluster, or set train.launcher: local")
    if running := earlier_job(name):  # its stage was killed; two jobs would write one snapshot
        raise PipelineError(f"{name}: job {running} of this chunk in this folder is still queued or running; wait"
                            f" for it to end or `scancel {running}`, then run `dvc repro` again")
    log_dir.mkdir(parents=True, exist_ok=True)  # SLURM does not create the output file's folder
    result = subprocess.run(["sbatch", *sbatch_args(slurm, nproc, name, log_dir)],
                            input=job_script(slurm, command, nproc),
                            text=True, capture_output=True)
    if result.returncode:
        reason = (result.stderr.strip().splitlines() or [f"exit status {result.returncode}"])[-1]
        raise PipelineError(f"{name}: sbatch refused the job: {reason.removeprefix('sbatch: error: ')}"
                            " (see train.slurm in params.yaml)")
    job = result.stdout.strip().split(";")[0]
    print(f"{name}: submitted job {job}, output in {log_dir}/slurm-{job}.out", flush=True)
    return job, log_dir / f"slurm-{job}.out"


def earlier_job(name: str) -> str | None:
    """A job of this user named `name` and working in this folder, still queued or running, or None."""
    result = subprocess.run(["squeue", "--me", "--noheader", f"--name={name}", "--format=%i %Z"], text=True,
                            capture_output=True)
    here = str(Path.cwd())
    return next((job for job, _, folder in (line.partition(" ") for line in result.stdout.splitlines())
                 if folder == here), None)


def wait(job: str, log: Path, name: str) -> JobEnd:
    """Wait for the job to end, copying its output to ours as it grows. On SIGINT or SIGTERM here, or the `dvc`
    that runs this stage gone, cancel the job (its trainer writes its snapshot) and raise Interrupted."""
    stream, pause = Stream(log), POLL_FIRST
    with StopSignals() as signals:
        watch, cancelled = ParentWatch(), None
        while (state := job_state(job, name))["JobState"] in ("PENDING", "CONFIGURING", "RUNNING", "COMPLETING",
                                                              "SUSPENDED", "REQUEUED", "RESIZING"):
            stream.copy()
            if state["JobState"] == "PENDING" and state.get("Reason") in HOPELESS:
                scancel(job)
                raise PipelineError(f"{name}: job {job} can never start: SLURM says {state['Reason']} (it asks for"
                                    " more than its partition or account allows; see train.slurm in params.yaml)")
            if cancelled is None and (cancelled := signals.received or watch.gone()):
                print(f"{name}: stopping job {job}; its trainer writes a snapshot", file=sys.stderr, flush=True)
                scancel(job)
            time.sleep(pause)
            pause = min(pause * 1.5, POLL_MAX)
    stream.copy()
    if cancelled:
        raise Interrupted(f"{name} stopped by {signal.Signals(cancelled).name} and its job {job} cancelled;"
                          " `dvc repro` resumes from its snapshot", cancelled)
    exit_code, _, killed_by = state.get("ExitCode", "0:0").partition(":")
    return JobEnd(job, state["JobState"], int(exit_code), int(killed_by or 0), state.get("NodeList", "its node"))


def job_state(job: str, name: str) -> dict[str, str]:
    """`scontrol show job`'s fields of the job (JobState, Reason, ExitCode, NodeList, ...); a controller that does
    not answer is asked again for PATIENCE seconds (it may be restarting)."""
    deadline = time.monotonic() + PATIENCE
    while (result := subprocess.run(["scontrol", "show", "job", "--oneliner", job], text=True,
                                    capture_output=True)).returncode:
        reason = " ".join(result.stderr.split())[:200] or f"scontrol exited with status {result.returncode}"
        if "Invalid job id" in reason or time.monotonic() > deadline:
            scancel(job)  # no job runs on unwatched
            raise PipelineError(f"{name}: cannot follow job {job} ({reason}); any snapshot is kept: `dvc repro`"
                                " resumes from it")
        time.sleep(POLL_MAX)
    return dict(re.findall(r"(\w+)=(\S*)", result.stdout))


def _appears(path: Path) -> bool:
    """Whether `path` exists here, allowing a shared filesystem's caches PATIENCE seconds to show it."""
    deadline = time.monotonic() + PATIENCE
    while not path.exists():
        if time.monotonic() > deadline:
            return False
        time.sleep(POLL_MAX)
    return True


def scancel(job: str) -> None:
    subprocess.run(["scancel", job], capture_output=True)


class Stream:
    """Copies what a job writes to its output file to this process's stdout, as it comes."""

    def __init__(self, path: Path):
        self.path, self.offset = path, 0

    def copy(self) -> None:
        with contextlib.suppress(FileNotFoundError), open(self.path, "rb") as file:
            file.seek(self.offset)
            if data := file.read():
                self.offset += len(data)
                sys.stdout.buffer.write(data)
                sys.stdout.flush()
