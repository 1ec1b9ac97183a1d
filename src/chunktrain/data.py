"""The synthetic regression data: a fixed random "teacher" network plus Gaussian noise."""

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pyarrow.parquet
import torch

from chunktrain.errors import PipelineError
from chunktrain.params import DataParams

if TYPE_CHECKING:
    import pandas

TARGET = "y"
TEACHER_HIDDEN = 64  # two tanh layers this wide are hard enough that a small MLP keeps improving on it for many epochs


@dataclass(frozen=True)
class Split:
    """One split in memory: features (n, n_features) and targets (n, 1), float32."""

    x: torch.Tensor
    y: torch.Tensor


def feature_names(n_features: int) -> list[str]:
    return [f"x{i}" for i in range(n_features)]


def generate_splits(data: DataParams, seed: int) -> dict[str, "pandas.DataFrame"]:
    """Draw features from N(0, 1) and targets from the teacher; the same params give the same frames."""
    import pandas  # here, not at the top: only stage generate needs it, and it costs a stage 0.5 s to import

    rng = np.random.default_rng(seed)
    # The teacher is drawn first, so n_samples changes the rows but not the function they sample.
    w1 = rng.standard_normal((data.n_features, TEACHER_HIDDEN)) * 2 / np.sqrt(data.n_features)
    w2 = rng.standard_normal((TEACHER_HIDDEN, TEACHER_HIDDEN)) * 2 / np.sqrt(TEACHER_HIDDEN)
    w3 = rng.standard_normal((TEACHER_HIDDEN, 1)) / np.sqrt(TEACHER_HIDDEN)
    x = rng.standard_normal((data.n_samples, data.n_features))
    y = np.tanh(np.tanh(x @ w1) @ w2) @ w3 + data.noise * rng.standard_normal((data.n_samples, 1))
    frame = pandas.DataFrame(x.astype(np.float32), columns=feature_names(data.n_features))
    frame[TARGET] = y[:, 0].astype(np.float32)
    splits, start = {}, 0
    for name, size in data.split_sizes().items():
        splits[name] = frame.iloc[start:start + size].reset_index(drop=True)
        start += size
    return splits


def count_features(path: str | Path) -> int:
    """The number of feature columns, read from the parquet schema without loading the rows."""
    return len(_feature_columns(pyarrow.parquet.read_schema(path).names, path))


def read_split(path: str | Path) -> Split:
    """Load a split written by generate_splits into float32 tensors."""
    # Importing pandas costs a training stage about half a second, so this avoids every pyarrow path that
    # imports it: read_table (through pyarrow.dataset) and to_numpy. Columns reach torch through DLPack.
    try:
        table = pyarrow.parquet.ParquetFile(path).read()
    except (OSError, ValueError) as error:
        raise PipelineError(f"cannot read dataset file {path} ({error}); run `dvc repro generate`") from None
    features = _feature_columns(table.column_names, path)
    # torch.stack copies the (read-only) Arrow columns into one new tensor.
    x = torch.stack([torch.from_dlpack(table[name].combine_chunks()) for name in features], dim=1).float()
    y = torch.stack([torch.from_dlpack(table[TARGET].combine_chunks())], dim=1).float()
    return Split(x, y)


def _feature_columns(columns: list[str], path) -> list[str]:
    features = [c for c in columns if c != TARGET]
    if TARGET not in columns or features != feature_names(len(features)):
        raise PipelineError(f"{path} has columns {columns}; expected x0, x1, ... and {TARGET}")
    return features
