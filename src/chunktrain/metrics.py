"""Metrics and plot files as DVC reads them: JSON for `dvc metrics`, CSV for `dvc plots`."""

import csv
import json
from pathlib import Path

from chunktrain.atomic import write_atomically


def write_json(path: str | Path, data: dict) -> None:
    """Write `data` as JSON atomically: a reader (`cat`, `dvc metrics show`) sees the old file or the new one."""
    write_atomically(path, lambda file: file.write(json.dumps(data, indent=2) + "\n"), binary=False)


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

