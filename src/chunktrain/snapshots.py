"""`python -m chunktrain.snapshots [--clear] [FOLDER]`: list, or delete, the mid-chunk snapshots under FOLDER."""

import argparse
from pathlib import Path

from chunktrain.checkpoint import CheckpointError, load_checkpoint
from chunktrain.resume import RESUME, clear


def describe(path: Path) -> str:
    """One line about a snapshot file: where in its chunk it was taken, and its size."""
    try:
        state = load_checkpoint(path, rebuild="`--clear` deletes it")[RESUME]
        where = f"step {state['step']} (epoch {state['epoch']}, batch {state['batch']})"
    except (CheckpointError, KeyError) as error:  # a corrupt snapshot is what this listing helps find
        where = f"unreadable ({error})"
    return f"{path}: {where}, {path.stat().st_size / 2**20:.1f} MiB"


def main(argv: list[str] | None = None) -> None:
    """List, or delete, the snapshots under FOLDER."""
    parser = argparse.ArgumentParser(prog="python -m chunktrain.snapshots", description=main.__doc__)
    parser.add_argument("folder", nargs="?", type=Path, default=Path(".resume"))
    parser.add_argument("--clear", action="store_true", help="delete every snapshot")
    args = parser.parse_args(argv)
    snapshots = sorted(args.folder.glob("*/*.pt"))
    for path in snapshots:
        print(describe(path))
    if args.clear:
        for path in snapshots:
            clear(path)
        print(f"deleted {len(snapshots)} snapshot(s) under {args.folder}")
    elif not snapshots:
        print(f"no snapshots under {args.folder}")


if __name__ == "__main__":
    main()
