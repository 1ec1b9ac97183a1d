"""Mid-chunk snapshots, the runner's side: when to take one, and listing and clearing them.

A snapshot (recipe/snapshot.py: what it holds and must match) is written atomically to .resume/<chunk>/, which is
neither a DVC output nor tracked by git, so DVC's deleting a stage's outputs before a rerun does not delete it.

`python -m chunktrain.runner.snapshots [--clear] [FOLDER]` lists, or deletes, the snapshots under FOLDER
(.resume): the files <chunk>/snapshot.pt that load as snapshots; it leaves any other file alone.
"""

import argparse
import contextlib
import sys
import time
from pathlib import Path

import torch

from chunktrain.recipe.checkpoint import GLOBAL_STEP, TRANSFORM, CheckpointError, load_checkpoint
from chunktrain.recipe.files import stale_temp_files
from chunktrain.recipe.snapshot import RESUME
from chunktrain.recipe.splits import is_text

FILE = "snapshot.pt"  # a chunk's snapshot is <folder>/<chunk>/snapshot.pt
MAX_OVERHEAD = 0.02  # time-based snapshots are spaced so that writing them costs under 2% of training


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
    """Delete a snapshot and any temp file a dead writer left beside it, and their folder once empty."""
    if not path.parent.is_dir():  # nothing there, or a file in the folder's place: no snapshot to clear
        return
    for stale in [path, *stale_temp_files(path)]:
        if stale.is_dir() and not stale.is_symlink():  # no snapshot could be written there: not ours to delete
            print(f"warning: {stale} is a folder, not a snapshot; left alone", file=sys.stderr)
            continue
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


def position(path: Path) -> str:
    """Where in its chunk the snapshot at `path` was taken, in the units its training log uses (a text's steps, a
    table's epochs and batches), or why it cannot be used."""
    try:
        snapshot = load_checkpoint(path)
        state = snapshot[RESUME]
        return (f"step {state['step']} of the chunk (global step {snapshot[GLOBAL_STEP]})"
                if is_text(snapshot[TRANSFORM]) else
                f"step {state['step']} of the chunk (epoch {state['epoch']}, batch {state['batch']})")
    except (CheckpointError, KeyError) as error:  # a corrupt snapshot is what the listing helps find
        return f"unusable ({error})"


def describe(path: Path) -> str:
    """One line about a snapshot file: its position, and its size."""
    if not is_snapshot(path):
        return f"{path}: not a snapshot, left alone"
    return f"{path}: {position(path)}, {path.stat().st_size / 2**20:.1f} MiB"


def main(argv: list[str] | None = None) -> None:
    """List, or delete, the snapshots under FOLDER: each <chunk>/snapshot.pt that is one."""
    parser = argparse.ArgumentParser(prog="python -m chunktrain.runner.snapshots", description=main.__doc__)
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
