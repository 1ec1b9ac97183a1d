"""Stage generate's work: the source table -> checked, shuffled, split, standardized, written with its id.

The splits hold the model's inputs as the training stages read them (recipe/splits.py): the features as float32
columns x0.., standardized with the train split's mean and std, and the target as column y (standardized
for regression, the class index for classification). The transform says how to get there from the raw
table; init stores it in the checkpoint, so prediction applies the same.
"""

import hashlib
import io
import json
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from chunktrain.data.specs import DataParams
from chunktrain.recipe.errors import PipelineError, brief
from chunktrain.recipe.splits import INFO, TARGET, check_transform, feature_names
from chunktrain.data import tables
from chunktrain.data.transform import fit_transform, standardize

MIN_TRAIN_ROWS = 2  # a std needs two values


def make_splits(data: DataParams, task: str, seed: int) -> tuple[dict, dict]:
    """The train, val and test frames as the training stages read them, and the transform; same input, same output."""
    frame, where = tables.read_table(data.source, "data.source"), data.source
    features = data.features or [str(c) for c in frame.columns if c != data.target]
    tables.require_columns(frame, [data.target], where, "target")
    tables.require_columns(frame, data.exclude, where, "excluded")
    features = [name for name in features if name not in data.exclude]
    tables.require_columns(frame, features, where, "feature")
    if not features:
        raise PipelineError(f"{where}: no feature columns besides the target {brief(data.target)}")
    if taken := [name for name in features if name == "prediction" or name.startswith("proba_")]:
        raise PipelineError(f"{where}: feature column {brief(taken[0])} has a name predict writes its output under"
                            " (prediction, proba_<class>); rename the column, or list it in data.exclude")
    x = tables.numeric_columns(frame, features, where)
    y = frame[data.target].to_numpy()
    check_target(y, task, data.target, where)
    sizes = data.split_sizes(len(frame))
    if sizes["train"] < MIN_TRAIN_ROWS or min(sizes.values()) < 1:
        raise PipelineError(f"{where} has {len(frame)} rows, too few for the splits data.val_fraction and"
                            f" data.test_fraction ask for ({sizes}); every split needs rows, train at least 2")
    order = np.random.default_rng(seed).permutation(len(frame))
    bounds = np.cumsum([0, *sizes.values()])
    rows = {name: order[lo:hi] for name, lo, hi in zip(sizes, bounds, bounds[1:])}
    transform = fit_transform(x[rows["train"]], y[rows["train"]], features, data.target, task, where,
                              rows["train"])
    splits = {}
    for name, index in rows.items():
        inputs, targets = standardize(transform, x[index], y[index], f"{where} ({name} split)", index)
        splits[name] = split_frame(inputs, targets)
    return splits, transform


def check_target(y: np.ndarray, task: str, name: str, where) -> None:
    """A regression target is finite numbers; a classification target is strings or integers, none missing."""
    import pandas
    from pandas.api.types import is_bool_dtype, is_integer_dtype, is_numeric_dtype, is_string_dtype

    column = pandas.Series(y)
    if column.isna().any():
        raise PipelineError(f"{where}: target column {brief(name)} has {int(column.isna().sum())} missing value(s),"
                            f" the first in row {int(np.flatnonzero(column.isna())[0])}; fill or drop them")
    if task == "regression":
        if not is_numeric_dtype(column) or is_bool_dtype(column):
            raise PipelineError(f"{where}: target column {brief(name)} is not numeric ({column.dtype}) but"
                                " model.task is regression; use classification for class labels")
        tables.check_finite(y.astype(np.float64)[:, None], [name], where)
    elif not (is_integer_dtype(column) or is_string_dtype(column) and all(isinstance(v, str) for v in y)):
        raise PipelineError(f"{where}: target column {brief(name)} holds {column.dtype} values; a classification"
                            " target must be class labels, strings or integers")


def split_frame(inputs: np.ndarray, targets: np.ndarray):
    """One split as data.py reads it: float32 columns x0.., and y (float32, or int64 class indices)."""
    import pandas

    split = pandas.DataFrame(inputs.astype(np.float32), columns=feature_names(inputs.shape[1]))
    split[TARGET] = targets
    return split


def parquet_bytes(frame) -> bytes:
    buffer = io.BytesIO()
    frame.to_parquet(buffer, index=False)
    return buffer.getvalue()


def write_dataset(files: dict[str, Iterable[bytes]], transform: dict, folder: Path) -> str:
    """Write each split's file into `folder`, a piece of its bytes at a time, then dataset.json: the transform and the
    dataset's id.

    The id is the sha256 of the transform and the splits' bytes, computed here, once, as they are written:
    checkpoints carry it, and every later stage compares ids instead of hashing the files again. dataset.json is
    removed first and written last, so a write that stops part-way (a split's pieces raising) leaves no dataset.
    """
    check_transform(transform)  # what every reader checks, so no NaN or Infinity is ever written
    digest = hashlib.sha256(json.dumps(transform, sort_keys=True, allow_nan=False).encode())
    folder.mkdir(parents=True, exist_ok=True)
    (folder / INFO).unlink(missing_ok=True)
    for name, pieces in files.items():
        with open(folder / name, "wb") as file:
            for piece in pieces:
                digest.update(piece)
                file.write(piece)
    (folder / INFO).write_text(json.dumps({"id": digest.hexdigest(), "transform": transform}, indent=1) + "\n")
    return digest.hexdigest()
