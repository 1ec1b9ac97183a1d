"""Mid-chunk snapshots: when to take one, what it must match, and how to resume from it.

A snapshot is a checkpoint plus the position inside the chunk, written atomically to a folder
that is neither a DVC output nor tracked by git, so DVC's deleting a stage's outputs before a
rerun does not delete it. It is used only if its fingerprint (parent checkpoint, effective
params, data files, training code) matches the run's, so a resumed chunk gives the same bytes.
"""

import contextlib
import fcntl
import hashlib
import os
import signal
import time
from collections.abc import Callable, Iterable
from pathlib import Path

import psutil
import torch

from chunktrain.atomic import stale_temp_files
from chunktrain.checkpoint import EPOCH, HISTORY, CheckpointError, file_sha256, load_checkpoint, save_checkpoint
from chunktrain.errors import PipelineError
from chunktrain.training import Position

RESUME = "resume"  # snapshots only: {fingerprint, epoch, batch, loss_sum, step}
MAX_OVERHEAD = 0.02  # time-based snapshots are spaced so that writing them costs under 2% of training


def fingerprint(*, parent: Path, params: dict, data: Iterable[Path], code: str) -> dict:
    """Everything that decides a chunk's result, hashed: a snapshot is valid only for an equal one.

    `code` is the stage's code digest (stage_inputs.code_digest): the sha256 of every file it runs.
    """
    return {
        "parent checkpoint": file_sha256(parent),
        "params": params,
        "data": {path.name: file_sha256(path) for path in data},
        "code": hashlib.sha256(code.encode()).hexdigest(),
    }


def save_snapshot(path: Path, checkpoint: dict, position: Position, step: int, fingerprint: dict,
                  written: Callable[[Path], None] | None = None) -> None:
    """Write checkpoint + position over the previous snapshot, atomically; `written` as in save_checkpoint."""
    save_checkpoint({**checkpoint, RESUME: {"fingerprint": fingerprint, "epoch": position.epoch,
                                            "batch": position.batch, "loss_sum": position.loss_sum,
                                            "step": step}}, path, written)


def load_snapshot(path: Path, fingerprint: dict, log: Callable[[str], None], *, parent: dict, epochs: int,
                  steps_per_epoch: int) -> dict | None:
    """The snapshot at `path` if it is readable, matches `fingerprint` and stands inside the chunk that continues
    `parent` for `epochs` epochs; else None, and `log` says why."""
    if not path.is_file():
        return None
    try:
        snapshot = load_checkpoint(path, rebuild="it will be replaced")
        saved = snapshot[RESUME]["fingerprint"]
        if not isinstance(saved, dict):
            raise TypeError(f"its fingerprint is a {type(saved).__name__}, not a dict")
    except (CheckpointError, KeyError, TypeError) as error:
        log(f"warning: skipping corrupt snapshot {path}: {str(error)[:200]}")
        return None
    changed = [part for part in fingerprint if saved.get(part) != fingerprint[part]]
    if changed:
        log(f"skipping snapshot {path}: it was taken with another {', '.join(changed)}")
        return None
    problem = position_problem(snapshot, parent, epochs, steps_per_epoch)
    if problem:
        log(f"warning: skipping snapshot {path}: {problem}")
        return None
    return snapshot


def position_problem(snapshot: dict, parent: dict, epochs: int, steps_per_epoch: int) -> str | None:
    """What makes a snapshot's position impossible for the chunk it claims to continue, or None."""
    state, first = snapshot[RESUME], parent[EPOCH] + 1
    epoch, batch, step, loss_sum = (state.get(key) for key in ("epoch", "batch", "step", "loss_sum"))
    if not all(type(value) is int for value in (epoch, batch, step)):
        return "its position is not a whole number of epochs, batches and steps"
    if not first <= epoch <= parent[EPOCH] + epochs or not 0 <= batch <= steps_per_epoch:
        return (f"its position (epoch {epoch}, batch {batch}) is outside the chunk (epochs {first}.."
                f"{parent[EPOCH] + epochs}, {steps_per_epoch} batches each)")
    if step != (epoch - first) * steps_per_epoch + batch or snapshot[EPOCH] != epoch - 1:
        return f"its step {step} and epoch {snapshot[EPOCH]} disagree with its position (epoch {epoch}, batch {batch})"
    if len(snapshot[HISTORY]) != len(parent[HISTORY]) + epoch - first:
        return f"its history has {len(snapshot[HISTORY])} epochs, not the {parent[EPOCH] + epoch - first} it should"
    if not isinstance(loss_sum, torch.Tensor) or loss_sum.shape != () or loss_sum.dtype != torch.float64:
        return "its running loss is not a float64 scalar"
    return None


def resume_position(snapshot: dict, parent_history_length: int) -> Position:
    """The position a snapshot was taken at, with the chunk's completed epochs."""
    state = snapshot[RESUME]
    return Position(epoch=state["epoch"], batch=state["batch"], loss_sum=state["loss_sum"].clone(),
                    history=snapshot[HISTORY][parent_history_length:])


class SnapshotSchedule:
    """Says when a snapshot is due: every `every_steps` steps and/or every `every_seconds` seconds."""

    def __init__(self, every_steps: int | None, every_seconds: float | None):
        self.every_steps = every_steps
        self.every_seconds = every_seconds
        self.last = time.monotonic()
        self.cost = 0.0  # seconds the last snapshot took to write

    def due(self, step: int) -> bool:
        if self.every_steps and step % self.every_steps == 0:
            return True
        if self.every_seconds:
            # A large checkpoint on a slow disk must not eat the run: keep writing under MAX_OVERHEAD.
            return time.monotonic() - self.last >= max(self.every_seconds, self.cost / MAX_OVERHEAD)
        return False

    def taken(self, started: float) -> None:
        self.last = time.monotonic()
        self.cost = self.last - started


def clear(path: Path) -> None:
    """Delete a snapshot, any temp file a dead writer left beside it, and its folder once empty."""
    if not path.parent.is_dir():  # nothing there, or a file in the folder's place: no snapshot to clear
        return
    for stale in [path, *stale_temp_files(path)]:
        stale.unlink(missing_ok=True)
    with contextlib.suppress(OSError):
        path.parent.rmdir()


@contextlib.contextmanager
def writer_lock(snapshot: Path, stage: str):
    """Hold the chunk's lock (.resume/<chunk>.lock) while training: a second trainer of the chunk stops at once.

    flock is released by the kernel when its holder dies, so a killed trainer never leaves a stale lock.
    """
    path = snapshot.parent.with_name(snapshot.parent.name + ".lock")
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as file:
        try:
            fcntl.flock(file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            file.seek(0)
            holder = file.read(20).strip() or "?"
            raise PipelineError(f"{stage}: another trainer (pid {holder}) is training this chunk and holds {path};"
                                " wait for it to finish, or stop it, before running the stage again") from None
        file.truncate(0)
        file.write(f"{os.getpid()}\n")
        file.flush()
        yield


class Launcher:
    """The `dvc` process that started this stage (DVC sets DVC_STAGE for its stage commands), if any.

    gone() says SIGTERM once it has died, so a trainer whose `dvc` was killed snapshots and stops
    instead of living on beside the next `dvc repro`. It looks at most once a second.
    """

    def __init__(self):
        self.process = _dvc_ancestor() if "DVC_STAGE" in os.environ else None
        self.checked = time.monotonic()

    def gone(self) -> int | None:
        if self.process is None or time.monotonic() - self.checked < 1.0:
            return None
        self.checked = time.monotonic()
        alive = self.process.is_running() and self.process.status() != psutil.STATUS_ZOMBIE
        return None if alive else signal.SIGTERM


def _dvc_ancestor() -> "psutil.Process | None":
    """The nearest ancestor process whose command runs dvc."""
    for process in psutil.Process().parents():
        with contextlib.suppress(psutil.Error):
            if any(Path(part).name in ("dvc", "dvc.exe") or part.endswith("dvc/__main__.py")
                   for part in process.cmdline()[:3]):
                return process
    return None
