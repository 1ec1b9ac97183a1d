"""Mid-chunk snapshots: when to take one, what it must match, and how to resume from it.

A snapshot is the chunk's checkpoint at a position inside the chunk, written atomically to .resume/<chunk>/,
which is neither a DVC output nor tracked by git, so DVC's deleting a stage's outputs before a rerun does not
delete it. Its lineage is the one the finished chunk will carry, and it is used only by a run of the same
lineage (parent, spec, dataset, code), so a resumed chunk gives the same bytes.

`python -m chunktrain.training.snapshots [--clear] [FOLDER]` lists, or deletes, the snapshots under FOLDER
(.resume): the files <chunk>/snapshot.pt that load as snapshots; it leaves any other file alone.
"""

import argparse
import contextlib
import time
from collections.abc import Callable
from pathlib import Path

import torch

from chunktrain.core.checkpoint import (EPOCH, GLOBAL_STEP, HISTORY, LINEAGE, CheckpointError, load_checkpoint,
                                        save_checkpoint)
from chunktrain.core.files import stale_temp_files
from chunktrain.training.loop import Position

RESUME = "resume"  # snapshots only: {epoch, batch, loss_sum, step}
FILE = "snapshot.pt"  # a chunk's snapshot is <folder>/<chunk>/snapshot.pt: dvc.yaml's --snapshot
CURVES_BEFORE = "curves-before.csv"  # beside it while the chunk trains: the charts' data as evaluate left it
MAX_OVERHEAD = 0.02  # time-based snapshots are spaced so that writing them costs under 2% of training


def save_snapshot(path: Path, checkpoint: dict, position: Position, step: int) -> None:
    """Write checkpoint + position over the previous snapshot, atomically."""
    save_checkpoint({**checkpoint, RESUME: {"epoch": position.epoch, "batch": position.batch,
                                            "loss_sum": position.loss_sum, "step": step}}, path)


def load_snapshot(path: Path, lineage: dict, log: Callable[[str], None], *, parent: dict, rounds: int,
                  steps_per_round: int) -> dict | None:
    """The snapshot at `path` if it is readable, was taken on the way to `lineage` and stands inside the chunk
    that continues `parent` for `rounds` rounds (epochs, or a text's eval_every steps); else None, and `log`
    says why."""
    if not path.is_file():
        return None
    try:
        snapshot = load_checkpoint(path)
        if not isinstance(snapshot.get(RESUME), dict):
            raise KeyError(f"no {RESUME!r} position: a checkpoint, not a snapshot")
    except (CheckpointError, KeyError) as error:
        log(f"warning: skipping corrupt snapshot {path}: {str(error)[:200]}")
        return None
    saved = snapshot[LINEAGE]
    if saved.get("id") != lineage["id"]:
        changed = [part for part in lineage if part != "id" and saved.get(part) != lineage[part]] or ["lineage id"]
        log(f"skipping snapshot {path}: it was taken with another {', '.join(changed)}")
        return None
    problem = position_problem(snapshot, parent, rounds, steps_per_round)
    if problem:
        log(f"warning: skipping snapshot {path}: {problem}")
        return None
    return snapshot


def position_problem(snapshot: dict, parent: dict, rounds: int, steps_per_round: int) -> str | None:
    """What makes a snapshot's position impossible for the chunk it claims to continue, or None."""
    state, first = snapshot[RESUME], parent[EPOCH] + 1
    epoch, batch, step, loss_sum = (state.get(key) for key in ("epoch", "batch", "step", "loss_sum"))
    if not all(type(value) is int for value in (epoch, batch, step)):
        return "its position is not a whole number of rounds, batches and steps"
    if not first <= epoch <= parent[EPOCH] + rounds or not 0 <= batch <= steps_per_round:
        return (f"its position (round {epoch}, batch {batch}) is outside the chunk (rounds {first}.."
                f"{parent[EPOCH] + rounds}, {steps_per_round} batches each)")
    if (step != (epoch - first) * steps_per_round + batch or snapshot[EPOCH] != epoch - 1
            or snapshot[GLOBAL_STEP] != parent[GLOBAL_STEP] + step):
        return f"its step {step} and round {snapshot[EPOCH]} disagree with its position (round {epoch}, batch {batch})"
    if len(snapshot[HISTORY]) != len(parent[HISTORY]) + epoch - first:
        return f"its history has {len(snapshot[HISTORY])} rounds, not the {parent[EPOCH] + epoch - first} it should"
    if not isinstance(loss_sum, torch.Tensor) or loss_sum.shape != () or loss_sum.dtype != torch.float64:
        return "its running loss is not a float64 scalar"
    return None


def resume_position(snapshot: dict, parent_history_length: int) -> Position:
    """The position a snapshot was taken at, with the chunk's completed rounds."""
    state = snapshot[RESUME]
    return Position(epoch=state["epoch"], step=snapshot[GLOBAL_STEP], batch=state["batch"],
                    loss_sum=state["loss_sum"].clone(),
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
    """Delete a snapshot, the chunk's copy of the charts' data and any temp file a dead writer left beside them,
    and their folder once empty."""
    if not path.parent.is_dir():  # nothing there, or a file in the folder's place: no snapshot to clear
        return
    curves = path.with_name(CURVES_BEFORE)
    for stale in [path, curves, *stale_temp_files(path), *stale_temp_files(curves)]:
        stale.unlink(missing_ok=True)
    with contextlib.suppress(OSError):
        path.parent.rmdir()


def is_snapshot(path: Path) -> bool:
    """Whether `path` holds a snapshot (of any format version, damaged or not): a dict with a RESUME position."""
    try:
        data = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # not a torch file, or one that needs more than weights_only loading: not ours
        return False
    return isinstance(data, dict) and isinstance(data.get(RESUME), dict)


def describe(path: Path) -> str:
    """One line about a snapshot file: where in its chunk it was taken, and its size."""
    if not is_snapshot(path):
        return f"{path}: not a snapshot, left alone"
    try:
        state = load_checkpoint(path)[RESUME]
        where = f"step {state['step']} (epoch {state['epoch']}, batch {state['batch']})"
    except (CheckpointError, KeyError) as error:  # a corrupt snapshot is what this listing helps find
        where = f"unusable ({error})"
    return f"{path}: {where}, {path.stat().st_size / 2**20:.1f} MiB"


def main(argv: list[str] | None = None) -> None:
    """List, or delete, the snapshots under FOLDER: each <chunk>/snapshot.pt that is one."""
    parser = argparse.ArgumentParser(prog="python -m chunktrain.training.snapshots", description=main.__doc__)
    parser.add_argument("folder", nargs="?", type=Path, default=Path(".resume"))
    parser.add_argument("--clear", action="store_true", help="delete every snapshot (and nothing else)")
    args = parser.parse_args(argv)
    found = sorted(path for path in args.folder.glob(f"*/{FILE}") if path.is_file())
    for path in found:
        print(describe(path))
    if args.clear:
        snapshots = [path for path in found if is_snapshot(path)]
        for path in snapshots:
            clear(path)
        print(f"deleted {len(snapshots)} snapshot(s) under {args.folder}")
    elif not found:
        print(f"no snapshots under {args.folder}")


if __name__ == "__main__":
    main()
