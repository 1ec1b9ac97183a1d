"""Metrics and plot files as DVC reads them: JSON for `dvc metrics`, CSV for `dvc plots`."""

import csv
import json
from pathlib import Path


def write_json(path: str | Path, data: dict) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2) + "\n")


def write_history(path: str | Path, history: list[dict]) -> None:
    """One row per global epoch: epoch, train_loss, val_loss, lr, chunk."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=list(history[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(history)
