"""`make exps`: one row per experiment, best val_loss first: the chunks it trained, the last of them and its best
chunk, each with its val_loss and test score, then the params that differ from its baseline; within 120 columns.
`make exps ALL=1` (--all): a row per chunk of every experiment instead.

metrics/chunks.json is an output in DVC's cache, not a metrics file, so `dvc exp show` has no columns for it:
this reads it from each revision `dvc exp show` lists, the workspace first. The chunks an experiment trained are
those whose checkpoint in its dvc.lock differs from the one in its baseline's: an experiment that appends c4 shows
c4's loss in its row even where c4 is not its best chunk.
"""

import argparse
import json
import subprocess
import sys
from pathlib import Path

import dvc.api
from dvc.exceptions import DvcException
import pandas as pd
import yaml

CHUNKS = "metrics/chunks.json"
WIDTH = 120  # columns of the default table; the params column is cut to fit
SCORE = ("test_mse", "test_cross_entropy")  # the test score shown beside a val_loss, the task's (a text has none)


def git(*args: str) -> str:
    return subprocess.run(["git", *args], check=True, capture_output=True, text=True).stdout


def revisions() -> list[dict]:
    """Each revision `dvc exp show` lists, the workspace first: name, rev, its baseline's rev and its params."""
    shown = json.loads(subprocess.run(["dvc", "exp", "show", "--json"], check=True, capture_output=True,
                                      text=True).stdout)
    found = []
    for row in shown:
        baseline = None if row["rev"] == "workspace" else row["rev"]
        name = row.get("name") or (row["rev"] if row["rev"] == "workspace" else row["rev"][:7])
        found.append({"name": name, "rev": row["rev"], "baseline": baseline, "params": params_of(row)})
        for exp in row.get("experiments") or []:
            rev = exp["revs"][0]
            found.append({"name": exp["name"] or rev["rev"][:7], "rev": rev["rev"], "baseline": row["rev"],
                          "params": params_of(rev)})
    head = next((found_row["rev"] for found_row in found[1:] if found_row["baseline"] == found_row["rev"]), None)
    found[0]["baseline"] = head  # the workspace compares with the commit it stands on
    return found


def params_of(row: dict) -> dict:
    return (((row.get("data") or {}).get("params") or {}).get("params.yaml") or {}).get("data") or {}


def chunk_scores(rev: str) -> dict[str, dict]:
    """metrics/chunks.json of `rev`: each chunk's scores; empty if it was not evaluated or is in no cache here."""
    try:
        text = Path(CHUNKS).read_text() if rev == "workspace" else dvc.api.read(CHUNKS, rev=rev)
    except (OSError, DvcException):
        return {}
    return json.loads(text)


def checkpoints(rev: str | None) -> dict[str, str]:
    """The md5 of each chunk's checkpoint in dvc.lock at `rev` (the workspace's file for "workspace")."""
    if rev is None:
        return {}
    try:
        text = Path("dvc.lock").read_text() if rev == "workspace" else git("show", f"{rev}:dvc.lock")
    except (OSError, subprocess.CalledProcessError):
        return {}
    stages = (yaml.safe_load(text) or {}).get("stages") or {}
    return {out["path"]: out.get("md5") for entry in stages.values() for out in entry.get("outs") or []
            if out["path"].startswith("data/checkpoints/")}


def differences(base, other, prefix: str = "") -> dict[str, object]:
    """The params of `other` that differ from `base`, by dotted key; a key new in `other` as its whole value."""
    if not (isinstance(base, dict) and isinstance(other, dict)):
        return {} if base == other else {prefix.rstrip("."): other}
    found = {}
    for key in other.keys() | base.keys():
        if key not in base:
            found[f"{prefix}{key}"] = other[key]
        elif key not in other:
            found[f"{prefix}{key}"] = "(removed)"
        else:
            found.update(differences(base[key], other[key], f"{prefix}{key}."))
    return found


def flow(value) -> str:
    """A value as params.yaml's flow style would write it: {from: c3, epochs: 2}."""
    if isinstance(value, dict):
        return "{" + ", ".join(f"{key}: {flow(item)}" for key, item in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(flow(item) for item in value) + "]"
    return "null" if value is None else str(value)


def summary(revision: dict, baselines: dict[str, dict]) -> dict | None:
    """One experiment's chunks: its scores, those it trained, the params that differ; None if not evaluated yet."""
    scores = chunk_scores(revision["rev"])
    if not scores:
        return None
    base = baselines.get(revision["baseline"]) if revision["baseline"] != revision["rev"] else None
    own, before = checkpoints(revision["rev"]), checkpoints(base["rev"]) if base else {}
    trained = [chunk for chunk, entry in scores.items()
               if entry["checkpoint"] not in before or before[entry["checkpoint"]] != own.get(entry["checkpoint"])]
    changed = differences(base["params"], revision["params"]) if base else {}
    return {"name": revision["name"], "scores": scores, "trained": trained,
            "params": " ".join(f"{key.replace('train.chunks.', 'chunks.')}={flow(value)}"
                                  for key, value in sorted(changed.items()))}


def row(experiment: dict, score: str | None) -> list[str]:
    """Its cells: name, the chunks it trained, the last of them (the furthest on) and its best chunk, each with its
    val_loss (and test score), and the params."""
    scores, trained = experiment["scores"], experiment["trained"]
    last = max(trained, key=lambda chunk: scores[chunk]["step"], default=None)
    best = min(scores, key=lambda chunk: scores[chunk]["val_loss"])
    cells = [experiment["name"], "-" if not trained else ",".join(trained) if len(trained) <= 3
             else f"{len(trained)} chunks"]
    for chunk in (last, best):
        found = scores.get(chunk, {})
        cells += [chunk or "-", number(found.get("val_loss"))] + ([number(found.get(score))] if score else [])
    return cells + [experiment["params"]]


def number(value) -> str:
    return "-" if value is None else f"{value:.4g}"


def table(lines: list[list[str]], width: int = WIDTH) -> str:
    """Left-aligned columns two spaces apart; the last one (the params) cut to fit `width`."""
    widths = [max(len(line[column]) for line in lines) for column in range(len(lines[0]) - 1)]
    out = []
    for line in lines:
        start = "  ".join(cell.ljust(size) for cell, size in zip(line, widths))
        rest, last = width - len(start) - 2, line[-1]
        out.append(f"{start}  {last if len(last) <= rest else last[:max(rest - 3, 0)] + '...'}".rstrip())
    return "\n".join(out)


def every_chunk(found: list[dict]) -> str:
    rows = [{"Experiment": revision["name"], "chunk": chunk, **{k: v for k, v in scores.items() if k != "checkpoint"}}
            for revision in found for chunk, scores in chunk_scores(revision["rev"]).items()]
    if not rows:
        sys.exit("error: no experiment has metrics/chunks.json yet: run make run or dvc exp run")
    frame = pd.DataFrame(rows).sort_values(["val_loss", "step"], kind="stable")
    return frame.to_string(index=False, float_format=lambda value: f"{value:.4g}", na_rep="")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--all", action="store_true", help="a row per chunk of every experiment")
    args = parser.parse_args(argv)
    found = revisions()
    if args.all:
        print(every_chunk(found))
        return
    baselines = {revision["rev"]: revision for revision in found}
    experiments = [experiment for revision in found if (experiment := summary(revision, baselines))]
    if not experiments:
        sys.exit("error: no experiment has metrics/chunks.json yet: run make run or dvc exp run")
    experiments.sort(key=lambda experiment: min(scores["val_loss"] for scores in experiment["scores"].values()))
    score = next((key for key in SCORE for experiment in experiments for scores in experiment["scores"].values()
                  if key in scores), None)
    measures = ["val_loss", *([score] if score else [])]
    header = ["Experiment", "trained", "last", *measures, "best", *measures, "params that differ"]
    print(table([header, *(row(experiment, score) for experiment in experiments)]))


if __name__ == "__main__":
    main()
