"""`make exps ALL=1`: every chunk of every experiment, best val_loss first (`make exps` shows each one's best).

metrics/chunks.json is an output in DVC's cache, not a metrics file, so `dvc exp show` has no columns for it:
this reads it from each revision `dvc exp show` lists, the workspace first.
"""

import json
import subprocess
import sys
from pathlib import Path

import dvc.api
import pandas as pd

CHUNKS = "metrics/chunks.json"


def revisions() -> list[tuple[str, str]]:
    """(name, rev) of the workspace, each baseline commit and each of its experiments, as `dvc exp show` has them."""
    shown = json.loads(subprocess.run(["dvc", "exp", "show", "--json"], check=True, capture_output=True,
                                      text=True).stdout)
    found = []
    for row in shown:
        found.append((row.get("name") or (row["rev"] if row["rev"] == "workspace" else row["rev"][:7]), row["rev"]))
        found += [(exp["name"] or exp["revs"][0]["rev"][:7], exp["revs"][0]["rev"])
                  for exp in row.get("experiments") or []]
    return found


def chunk_rows(name: str, rev: str) -> list[dict]:
    try:
        text = Path(CHUNKS).read_text() if rev == "workspace" else dvc.api.read(CHUNKS, rev=rev)
    except (OSError, dvc.api.DvcException):  # not evaluated yet, or its file is in no cache here
        return []
    return [{"Experiment": name, "chunk": chunk, **{k: v for k, v in scores.items() if k != "checkpoint"}}
            for chunk, scores in json.loads(text).items()]


def main() -> None:
    rows = [row for name, rev in revisions() for row in chunk_rows(name, rev)]
    if not rows:
        sys.exit("error: no experiment has metrics/chunks.json yet: run make run or dvc exp run")
    table = pd.DataFrame(rows).sort_values(["val_loss", "step"], kind="stable")
    print(table.to_string(index=False, float_format=lambda value: f"{value:.4g}", na_rep=""))


if __name__ == "__main__":
    main()
