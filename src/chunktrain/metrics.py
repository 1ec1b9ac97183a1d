"""Metrics and plot files as DVC reads them: JSON for `dvc metrics`, CSV for `dvc plots`."""

import csv
import json
import os
import tempfile
from pathlib import Path


def write_json(path: str | Path, data: dict) -> None:
    """Write `data` as JSON atomically: a reader (`cat`, `dvc metrics show`) sees the old file or the new one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # A dot and .tmp, which .gitignore and .dvcignore skip; os.replace within one folder is atomic.
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes it 0600; give it the mode open() would have
    try:
        with os.fdopen(fd, "w") as file:
            file.write(json.dumps(data, indent=2) + "\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def epoch_metrics(record: dict) -> dict:
    """A chunk's metrics file after the epoch of `record`: rewritten every epoch, the last one stays."""
    return {"epoch": record["epoch"], "train_loss": record["train_loss"], "val_loss": record["val_loss"]}


def write_rows(path: str | Path, rows: list[dict]) -> None:
    """A CSV with one row per dict, columns in the first dict's key order."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
