"""metrics/curves.csv, the data of the loss and lr charts (dvc.yaml's plots): one row per branch and round.

Stage evaluate writes every branch of the chunk tree. While a chunk trains, it rewrites the file after every
round with its own branch so far, so `dvc plots show` and the VS Code extension follow it; evaluate then
writes the final rows, the same numbers.
"""

import csv
from pathlib import Path


def tree_curves(leaves: list[str], histories: dict[str, list[dict]]) -> list[dict]:
    """One row per branch and round: the whole lineage of every branch, for one chart of the tree.

    A branch is named after its last chunk (a leaf); branches repeat the rounds they share, so each is one line.
    """
    return [{"branch": leaf, "chunk": record["chunk"], "step": record["step"], "epoch": record["epoch"],
             "train_loss": record["train_loss"], "val_loss": record["val_loss"], "lr": record["lr"]}
            for leaf in leaves for record in histories[leaf]]


def other_branches(path: Path, chunk: str) -> list[dict]:
    """The rows of `path` (as evaluate last wrote it) of the branches that do not pass through `chunk`: they
    stay on the chart beside the chunk's own branch while it trains. Their values stay the strings read."""
    if not path.is_file():
        return []
    with open(path, newline="") as file:
        rows = list(csv.DictReader(file))
    through = {row["branch"] for row in rows if row.get("chunk") == chunk}
    return [row for row in rows if row.get("branch") not in through]
