"""Mid-chunk snapshots: when to take one, what it must match, and how to resume from it.

A snapshot is a checkpoint plus the position inside the chunk, written atomically to a folder
that is neither a DVC output nor tracked by git, so DVC's deleting a stage's outputs before a
rerun does not delete it. It is used only if its fingerprint (parent checkpoint, effective
params, data files, training code) matches the run's, so a resumed chunk gives the same bytes.
"""

import contextlib
import hashlib
import time
from collections.abc import Callable, Iterable
from pathlib import Path

from chunktrain.checkpoint import HISTORY, CheckpointError, file_sha256, load_checkpoint, save_checkpoint
from chunktrain.training import Position

RESUME = "resume"  # snapshots only: {fingerprint, epoch, batch, loss_sum, step}
MAX_OVERHEAD = 0.02  # time-based snapshots are spaced so that writing them costs under 2% of training


def fingerprint(*, parent: Path, params: dict, data: Iterable[Path], code: Iterable[Path]) -> dict:
    """Everything that decides a chunk's result, hashed: a snapshot is valid only for an equal one."""
    code_hash = hashlib.sha256()
    for path in sorted(code):
        code_hash.update(path.name.encode() + b"\0" + path.read_bytes())
    return {
        "parent checkpoint": file_sha256(parent),
        "params": params,
        "data": {path.name: file_sha256(path) for path in data},
        "code": code_hash.hexdigest(),
    }


def save_snapshot(path: Path, checkpoint: dict, position: Position, step: int, fingerprint: dict,
                  written: Callable[[Path], None] | None = None) -> None:
    """Write checkpoint + position over the previous snapshot, atomically; `written` as in save_checkpoint."""
    save_checkpoint({**checkpoint, RESUME: {"fingerprint": fingerprint, "epoch": position.epoch,
                                            "batch": position.batch, "loss_sum": position.loss_sum,
                                            "step": step}}, path, written)


def load_snapshot(path: Path, fingerprint: dict, log: Callable[[str], None]) -> dict | None:
    """The snapshot at `path` if it is readable and matches `fingerprint`, else None (and `log` says why)."""
    if not path.is_file():
        return None
    try:
        snapshot = load_checkpoint(path, rebuild="it will be replaced")
        saved = snapshot[RESUME]["fingerprint"]
    except (CheckpointError, KeyError, TypeError) as error:
        log(f"warning: skipping corrupt snapshot {path}: {error}")
        return None
    changed = [part for part in fingerprint if saved.get(part) != fingerprint[part]]
    if changed:
        log(f"skipping snapshot {path}: it was taken with another {', '.join(changed)}")
        return None
    return snapshot


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
    """Delete a snapshot, any temp file a crash left beside it, and its folder once empty."""
    for stale in [path, *path.parent.glob(f".{path.name}.*.tmp")]:
        stale.unlink(missing_ok=True)
    with contextlib.suppress(OSError):
        path.parent.rmdir()
