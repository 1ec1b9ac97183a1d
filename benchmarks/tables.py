"""Own tables against simple baselines: public tables, each a CSV given as data.source with params.yaml's shipped
settings, trained and scored by the project's own stages; beside them, on the same split, a linear model
(logistic regression or ridge) and gradient boosting (scikit-learn's HistGradientBoosting), each with its defaults.

Each table's rows: the best chunk as evaluate picks it now (each chunk's best round); the choice evaluate made
before chunks kept their best round (the chunk whose last round had the lowest val loss, with its last weights);
the two baselines. --grid also trains variants of the table defaults (width, lr, weight decay, batch size) and
compares each with the linear baseline. Prints the tables and writes metrics/bench_tables.json.

The tables ship with scikit-learn and statsmodels (`make bench` installs both); nothing is downloaded.
"""

import argparse
import contextlib
import copy
import io
import json
import math
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import yaml
from bench import ROOT, machine  # puts src/ on sys.path

from chunktrain.recipe import checkpoint as ckpt  # noqa: E402
from chunktrain.recipe.model import build_model  # noqa: E402
from chunktrain.recipe.splits import read_dataset  # noqa: E402
from chunktrain.recipe.tasks import evaluate, make_task  # noqa: E402
from chunktrain.testing import new_project  # noqa: E402

METRICS = {"classification": ("cross_entropy", "accuracy"), "regression": ("mse", "mae")}
# Variants of the table defaults for --grid: params.yaml keys (dotted) and their values.
VARIANTS = {
    "shipped": {},
    "lr 0.003": {"train.lr": 0.003},
    "lr 0.0003": {"train.lr": 0.0003},
    "hidden [64]": {"model.args.hidden": [64]},
    "hidden [256, 256]": {"model.args.hidden": [256, 256]},
    "weight_decay 0.01": {"train.weight_decay": 0.01},
    "adamw, weight_decay 0.1": {"train.optimizer": "adamw", "train.weight_decay": 0.1},
    "batch_size 32": {"train.batch_size": 32},
}


def public_tables() -> dict[str, tuple[pd.DataFrame, str, str]]:
    """name -> (table, target column, task): the tables scikit-learn and statsmodels ship with their code."""
    from sklearn import datasets
    from statsmodels.datasets import fair

    found = {}
    for name, load, task in [("breast_cancer", datasets.load_breast_cancer, "classification"),
                             ("wine", datasets.load_wine, "classification"),
                             ("digits", datasets.load_digits, "classification"),
                             ("diabetes", datasets.load_diabetes, "regression")]:
        frame = load(as_frame=True).frame
        found[name] = (frame, "target", task)
    # The trial of issue 30: did a respondent have an affair (yes/no), from 8 answers; 6,366 rows.
    frame = fair.load_pandas().data
    frame["affair"] = (frame.pop("affairs") > 0).astype(int)
    found["fair"] = (frame, "affair", "classification")
    return found


def table_params(source: str, target: str, task: str, exclude: list[str], variant: dict) -> dict:
    """The shipped params.yaml on an own table, as the README's "Your own data" says, with a variant's keys set."""
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["data"].update(source=source, target=target, features=None, exclude=exclude)
    params["model"]["task"] = task
    params["synthetic"]["n_samples"] = 100  # stage synthesize still runs; nothing reads its table
    for key, value in variant.items():
        *path, last = key.split(".")
        section = params
        for part in path:
            section = section[part]
        section[last] = copy.deepcopy(value)
    return params


def train_chunks(root: Path, frame: pd.DataFrame, target: str, task: str, variant: dict) -> Path:
    """Every stage of the project on the table, as dvc.yaml runs them, its chunks parents first; the project's root."""
    # Left out as a user would after generate names them: columns that are constant, or nearly so (digits' border
    # pixels), in the train split that some seed draws.
    rare = [str(c) for c in frame.columns if c != target and frame[c].value_counts(normalize=True).iloc[0] > 0.99]
    project = new_project(root, table_params("table.csv", target, task, rare, variant), git=False)
    frame.to_csv(root / "table.csv", index=False)
    quiet = io.StringIO()
    try:
        with contextlib.redirect_stdout(quiet), contextlib.redirect_stderr(quiet):
            project.generate()
            project.init()
            for name in project.params["train"]["chunks"]:  # params.yaml lists a chunk after its parent
                project.train(name)
            project.evaluate()
    except BaseException:
        print(quiet.getvalue()[-3000:], file=sys.stderr)
        raise
    return root


def chunk_rows(root: Path, task: str) -> list[dict]:
    """The best chunk as evaluate picks it now, and as it picked it before chunks kept their best round."""
    best = json.loads((root / "metrics/best.json").read_text())
    rows = [{"model": "chunks: best round", "chunk": f"{best['chunk']} epoch {best['epoch']}",
             **{metric: best[f"test_{metric}"] for metric in METRICS[task]}}]
    checkpoints = {path.stem: ckpt.load_checkpoint(path) for path in sorted((root / "data/checkpoints").glob("*.pt"))
                   if path.stem != "init"}
    name = min(checkpoints, key=lambda chunk: (checkpoints[chunk][ckpt.HISTORY][-1]["val_loss"],
                                               checkpoints[chunk][ckpt.GLOBAL_STEP]))
    last = checkpoints[name]
    model = build_model(last[ckpt.MODEL_CONFIG])
    model.load_state_dict(last[ckpt.MODEL_STATE])
    scores = evaluate(model.eval(), read_dataset(root / "data/dataset").split("test"), make_task(last[ckpt.TRANSFORM]))
    rows.append({"model": "chunks: last round (before)", "chunk": f"{name} epoch {last[ckpt.EPOCH]}",
                 **{metric: scores[metric] for metric in METRICS[task]}})
    return rows


def baseline_rows(root: Path, task: str) -> list[dict]:
    """A linear model and gradient boosting, fitted on the train split generate wrote, scored on its test split."""
    from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor
    from sklearn.linear_model import LogisticRegression, Ridge

    dataset = read_dataset(root / "data/dataset")
    train, test = (dataset.split(name) for name in ("train", "test"))
    x, y, x_test, y_test = train.x.numpy(), train.y.numpy().ravel(), test.x.numpy(), test.y.numpy().ravel()
    rows = []
    if task == "classification":
        for name, model in [("logistic regression", LogisticRegression(max_iter=5000)),
                            ("gradient boosting", HistGradientBoostingClassifier(random_state=0))]:
            model.fit(x, y)
            proba = np.zeros((len(y_test), len(dataset.transform["labels"])))
            proba[:, model.classes_] = model.predict_proba(x_test)
            picked = np.clip(proba[np.arange(len(y_test)), y_test], 1e-15, None)
            rows.append({"model": name, "cross_entropy": float(-np.log(picked).mean()),
                         "accuracy": float((proba.argmax(axis=1) == y_test).mean())})
    else:
        std = dataset.transform["target_std"]  # the splits hold the standardized target; metrics are in its units
        for name, model in [("ridge", Ridge()), ("gradient boosting", HistGradientBoostingRegressor(random_state=0))]:
            error = (model.fit(x, y).predict(x_test) - y_test) * std
            rows.append({"model": name, "mse": float((error ** 2).mean()), "mae": float(np.abs(error).mean())})
    return rows


def compare(work: Path, tables: dict) -> list[dict]:
    """Every table's rows: the chunks (now and before) and the baselines, with the table's size."""
    rows = []
    for name, (frame, target, task) in tables.items():
        started = time.perf_counter()
        root = train_chunks(work / name, frame, target, task, {})
        size = {"table": name, "rows": len(frame), "features": frame.shape[1] - 1}
        rows += [{**size, **row} for row in chunk_rows(root, task) + baseline_rows(root, task)]
        print(f"{name}: {time.perf_counter() - started:.0f} s", file=sys.stderr, flush=True)
    return rows


def grid(work: Path, tables: dict, seeds: int) -> list[dict]:
    """Each variant's best-chunk test loss on each table over the linear baseline's on the same split (below 1:
    better), the geometric mean over `seeds` seeds (each its own split and init); and the best round's mean epoch."""
    rows = []
    for index, (variant, keys) in enumerate(VARIANTS.items()):
        row = {"variant": variant}
        for name, (frame, target, task) in tables.items():
            ratios, epochs = [], []
            for seed in range(seeds):
                root = train_chunks(work / f"{name}-{index}-{seed}", frame, target, task, {**keys, "seed": seed})
                best = json.loads((root / "metrics/best.json").read_text())
                linear = baseline_rows(root, task)[0][METRICS[task][0]]
                ratios.append(best[f"test_{METRICS[task][0]}"] / linear)
                epochs.append(best["epoch"])
            row[name], row[f"{name} epoch"] = geometric_mean(ratios), float(np.mean(epochs))
        row["all tables"] = geometric_mean([row[name] for name in tables])
        rows.append(row)
        print(f"{variant}: {row['all tables']:.3f}", file=sys.stderr, flush=True)
    return rows


def geometric_mean(values: list[float]) -> float:
    return math.exp(float(np.log(values).mean()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--grid", type=int, default=0, metavar="SEEDS",
                        help="also train the variants of the table defaults, with seeds 0..SEEDS-1")
    parser.add_argument("--out", type=Path, default=ROOT / "metrics/bench_tables.json")
    args = parser.parse_args()
    try:
        tables = public_tables()
    except ImportError as error:
        parser.error(f"{error.name} is missing: `make bench` installs it (benchmarks/requirements.txt)")
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="chunktrain-tables-") as work:
        rows = compare(Path(work), tables)
        frame = pd.DataFrame(rows).set_index(["table", "model"])
        print(frame.to_string(float_format="{:.4f}".format, na_rep="-"))
        variants = grid(Path(work), tables, args.grid) if args.grid else []
    if variants:
        print(f"\ntest loss of the best chunk / the linear baseline's (below 1: better), geometric mean of"
              f" {args.grid} seeds; the best round's mean epoch")
        print(pd.DataFrame(variants).set_index("variant").to_string(float_format="{:.3f}".format))
    command = " ".join(["python benchmarks/tables.py", *sys.argv[1:]])
    args.out.write_text(json.dumps({"command": command, "machine": machine(), "minutes":
                                    round((time.perf_counter() - started) / 60, 1), "rows": rows,
                                    "variants": variants}, indent=2, default=float) + "\n")


if __name__ == "__main__":
    main()
