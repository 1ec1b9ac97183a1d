"""The dataset folder as generate writes it and the other stages read it: dataset.json and one file per split.

A table's splits are parquet files of columns x0.. and y; a text's are flat token files (uint16, or uint32 for a
vocabulary of more than 65,536 tokens), which training reads window by window, never whole.
"""

import functools
import json
import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal

import numpy as np
import pyarrow.parquet
import pyarrow.types
from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr, field_validator, model_validator

from chunktrain.recipe.specs import MAX_VOCAB, validated
from chunktrain.recipe.errors import PipelineError

TARGET = "y"
INFO = "dataset.json"  # the dataset's id and transform
LANGUAGE_MODEL = "language_model"  # the task of a text


def is_text(transform: dict) -> bool:
    """Whether a transform (a dataset's, a checkpoint's) is a text's vocabulary rather than a table's statistics."""
    return transform.get("task") == LANGUAGE_MODEL


def vocab_size(transform: dict) -> int:
    """The token ids of a text's transform: its characters, or its tokenizer's tokens (special ones included)."""
    if transform.get("tokenizer") is not None:
        return read_tokenizer(transform["tokenizer"]).get_vocab_size(with_added_tokens=True)
    return len(transform["vocab"])


def token_type(vocab: int) -> type[np.unsignedinteger]:
    """The narrowest type of a token file for a vocabulary of `vocab` ids."""
    return np.uint16 if vocab <= 2**16 else np.uint32


@functools.lru_cache(maxsize=4)
def read_tokenizer(text: str):
    """A Hugging Face tokenizer from its tokenizer.json text; imported here, as only a text's stages need it."""
    from tokenizers import Tokenizer

    try:
        return Tokenizer.from_str(text)
    except Exception as error:  # the library raises its own exception type for malformed JSON and unknown parts
        raise ValueError(f"not a tokenizer.json ({' '.join(str(error).split())[:200]})") from None


Finite = Annotated[float, Field(allow_inf_nan=False)]
Spread = Annotated[float, Field(gt=0, allow_inf_nan=False)]


class TableTransform(BaseModel):
    """A table's transform as data/transform.py fits it; checked wherever one is read from a file."""

    model_config = ConfigDict(strict=True)

    task: Literal["regression", "classification"]
    features: list[StrictStr] = Field(min_length=1)
    feature_mean: list[Finite]
    feature_std: list[Spread]
    target: StrictStr
    target_mean: Finite | None
    target_std: Spread | None
    labels: Annotated[list[StrictStr | StrictInt], Field(min_length=2)] | None

    @model_validator(mode="after")
    def _consistent(self):
        lengths = {len(self.features), len(self.feature_mean), len(self.feature_std)}
        if len(lengths) > 1:
            raise ValueError(f"features, feature_mean and feature_std differ in length ({len(self.features)},"
                             f" {len(self.feature_mean)}, {len(self.feature_std)})")
        if len(set(self.features)) < len(self.features):
            raise ValueError("features: a name appears more than once")
        if self.task == "regression" and (self.labels is not None or None in (self.target_mean, self.target_std)):
            raise ValueError("task is regression, which needs target_mean and target_std and no labels")
        if self.task == "classification" and self.labels is None:
            raise ValueError("task is classification, which needs labels")
        if self.labels and len(set(self.labels)) < len(self.labels):
            raise ValueError("labels: a class appears more than once")
        return self


class TextTransform(BaseModel):
    """A text's transform: the character of each token id, or a Hugging Face tokenizer (its tokenizer.json text)."""

    model_config = ConfigDict(strict=True)

    task: Literal["language_model"]
    vocab: list[Annotated[StrictStr, Field(min_length=1, max_length=1)]] | None = Field(default=None, min_length=1,
                                                                                           max_length=2**16)
    tokenizer: StrictStr | None = None

    @model_validator(mode="after")
    def _one_tokenizer(self):
        if (self.vocab is None) == (self.tokenizer is None):
            raise ValueError("a text's transform holds either vocab (characters) or tokenizer, one of them")
        if self.tokenizer is not None and not 0 < (size := vocab_size(self.model_dump())) <= MAX_VOCAB:
            raise ValueError(f"tokenizer: {size} tokens; a vocabulary has 1 to {MAX_VOCAB:,}")
        return self

    @field_validator("vocab")
    @classmethod
    def _distinct(cls, vocab: list[str]) -> list[str]:
        if len(set(vocab)) < len(vocab):  # two ids for one character: sampling would decode with a wrong mapping
            [(repeated, _)] = Counter(vocab).most_common(1)
            raise ValueError(f"character {repeated!r} appears more than once")
        return vocab


def check_transform(transform) -> None:
    """A transform read from a file (a checkpoint's) is one that generate could have written; else one line."""
    if not isinstance(transform, dict):
        raise PipelineError(f"transform: expected a dict, got {type(transform).__name__}")
    validated(TextTransform if is_text(transform) else TableTransform, transform, "transform")


def feature_names(n_features: int) -> list[str]:
    return [f"x{i}" for i in range(n_features)]


@dataclass(frozen=True)
class Split:
    """One split in memory: features (n, n_features) float32; targets (n, 1) float32, or (n,) int64 class indices."""

    x: "torch.Tensor"
    y: "torch.Tensor"


@dataclass(frozen=True)
class Dataset:
    """The dataset folder generate writes (data/dataset/): dataset.json and the splits."""

    folder: Path
    id: str  # sha256 of the transform and the splits' bytes, computed once as generate writes them
    transform: dict  # how raw values became the splits (data/transform.py), or a text's vocabulary

    @property
    def is_text(self) -> bool:
        return is_text(self.transform)

    def split(self, name: str) -> "Split | Tokens":
        """A table's split in memory, or a text's token file, open to read windows from."""
        if self.is_text:
            return Tokens(self.folder / f"{name}.bin", token_type(vocab_size(self.transform)))
        return read_split(self.folder / f"{name}.parquet")

    def rows(self, name: str) -> int:
        """The rows of a table's split, without reading them."""
        return count_rows(self.folder / f"{name}.parquet")


def read_dataset(folder: str | Path) -> Dataset:
    """The dataset folder generate wrote; a missing or malformed dataset.json is one line."""
    path = Path(folder) / INFO
    try:
        info = json.loads(path.read_text())
        dataset = Dataset(folder=Path(folder), id=str(info["id"]), transform=dict(info["transform"]))
        check_transform(dataset.transform)
    except (OSError, ValueError, KeyError, TypeError, PipelineError) as error:
        raise PipelineError(f"cannot read {path} ({error}); run `dvc repro generate`") from None
    return dataset


class Tokens:
    """A text split's token file, read a window at a time with pread: never loaded whole, and not memory-mapped,
    because a mapped file's pages count in the process's memory (RSS) as random windows touch them all."""

    def __init__(self, path: str | Path, dtype: type[np.unsignedinteger] = np.uint16):
        self.dtype = np.dtype(dtype)
        try:
            self.fd = os.open(path, os.O_RDONLY)
            size = os.fstat(self.fd).st_size
        except OSError as error:
            raise PipelineError(f"cannot read token file {path} ({error.strerror}); run `dvc repro generate`") from None
        if size % self.dtype.itemsize:
            raise PipelineError(f"token file {path} has a size of {size} bytes, not a multiple of its"
                                f" {self.dtype.itemsize}-byte tokens; run `dvc repro generate`")
        self.size = size // self.dtype.itemsize

    def __len__(self) -> int:
        return self.size

    def __del__(self) -> None:
        if hasattr(self, "fd"):
            os.close(self.fd)

    def windows(self, starts: np.ndarray, length: int) -> np.ndarray:
        """The `length` token ids from each of `starts`, (len(starts), length)."""
        item = self.dtype.itemsize
        return np.frombuffer(b"".join(os.pread(self.fd, length * item, int(start) * item) for start in starts),
                             dtype=self.dtype).reshape(len(starts), length)


def count_rows(path: str | Path) -> int:
    """The number of rows of a split, from the parquet footer without loading them."""
    return _parquet_file(path).metadata.num_rows


def read_split(path: str | Path) -> Split:
    """Load a split as generate wrote it: float32 features; float32 targets, or int64 class indices."""
    import torch  # here, not at the top: stage generate imports this module and needs no torch (about a second)

    # Importing pandas costs a training stage about half a second, so this avoids every pyarrow path that
    # imports it: read_table (through pyarrow.dataset) and to_numpy. Columns reach torch through DLPack.
    table = _parquet_file(path).read()
    features = _feature_columns(table.column_names, path)
    for name in features:
        _check_type(table[name], name, path, pyarrow.types.is_floating, "floats")
    classes = pyarrow.types.is_integer(table[TARGET].type)  # class indices; a regression target is floats
    _check_type(table[TARGET], TARGET, path, pyarrow.types.is_integer if classes else pyarrow.types.is_floating,
                "class indices" if classes else "floats")
    # torch.stack copies the (read-only) Arrow columns into one new tensor.
    x = torch.stack([torch.from_dlpack(table[name].combine_chunks()) for name in features], dim=1).float()
    target = torch.from_dlpack(table[TARGET].combine_chunks())
    y = target.long().clone() if classes else torch.stack([target], dim=1).float()
    for name, values in [*zip(features, x.T), *([] if classes else [(TARGET, y[:, 0])])]:
        bad = (~torch.isfinite(values)).nonzero()
        if len(bad):
            raise PipelineError(f"{path}: column {name} has {len(bad)} NaN or infinite value(s), the first in row"
                                f" {bad[0].item()}; run `dvc repro generate`")
    return Split(x, y)


def _parquet_file(path: str | Path) -> pyarrow.parquet.ParquetFile:
    try:
        return pyarrow.parquet.ParquetFile(path)
    except (OSError, ValueError) as error:
        raise PipelineError(f"cannot read dataset file {path} ({error}); run `dvc repro generate`") from None


def _check_type(column, name: str, path, is_expected, expected: str) -> None:
    if not is_expected(column.type) or column.null_count:
        what = f"{column.null_count} null(s)" if column.null_count else f"type {column.type}"
        raise PipelineError(f"{path}: column {name} has {what}; expected {expected} only; run `dvc repro generate`")


def _feature_columns(columns: list[str], path) -> list[str]:
    features = [c for c in columns if c != TARGET]
    if TARGET not in columns or features != feature_names(len(features)):
        raise PipelineError(f"{path} has columns {columns}; expected x0, x1, ... and {TARGET}")
    return features
