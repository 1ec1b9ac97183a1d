"""Stage synthesize's and generate's params and specs: the synthetic table, and data.source split for the task."""

import os
import re
import stat
from pathlib import Path, PurePosixPath
from typing import Annotated

from pydantic import Field, model_validator

from chunktrain.recipe.errors import PipelineError, brief
from chunktrain.recipe.specs import Section, Spec, Task

Fraction = Annotated[float, Field(gt=0, lt=1)]
TABLE_SUFFIXES = (".csv", ".parquet")
TEXT_SUFFIX = ".txt"  # a UTF-8 text: the language_model task, chunks counted in steps


class SyntheticParams(Section):
    """The default data source: a random teacher network's outputs plus noise, written by stage synthesize."""

    n_samples: int = Field(gt=0)  # rows before the split
    n_features: int = Field(gt=0)  # feature columns x0, x1, ...
    noise: float = Field(ge=0)  # std of the Gaussian noise on the teacher's output


# Written by stage synthesize where data.source is its table; a params.yaml for your own data may leave it out.
SYNTHETIC_DEFAULT = SyntheticParams(n_samples=200_000, n_features=16, noise=0.1)
SYNTHETIC_SOURCE = "data/raw/synthetic.parquet"  # stage synthesize's out in dvc.yaml, the default data.source
URL = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*:")  # a scheme (http:, ssh:, s3:, remote:, file:, C:): not a repo path


class DataParams(Section):
    source: str  # the path of a CSV or parquet table, or a .txt text, inside the repo; dvc.yaml reads it too
    target: str = "y"  # the target column
    features: list[str] | None = Field(default=None, min_length=1)  # None: every column but the target
    exclude: list[str] = []  # columns left out of the features, e.g. constant ones
    val_fraction: Fraction
    test_fraction: Fraction | None = None  # tables only: a text's val split is its last val_fraction

    @property
    def is_text(self) -> bool:
        return PurePosixPath(self.source).suffix.lower() == TEXT_SUFFIX

    @model_validator(mode="after")
    def _splits_and_columns(self) -> "DataParams":
        path = PurePosixPath(self.source)
        if URL.match(self.source):
            raise ValueError(f"data.source: {brief(self.source)} is a URL; DVC would fetch it. Bring the file into"
                             " the repo with `dvc import-url URL data/own/FILE` and give that path")
        if path.is_absolute() or ".." in path.parts or path.suffix.lower() not in (*TABLE_SUFFIXES, TEXT_SUFFIX):
            raise ValueError(f"data.source: {brief(self.source)} must be the relative path of a .csv or .parquet"
                             " table, or a .txt text, inside the repo")
        if self.is_text:
            if self.test_fraction is not None or self.features is not None or self.exclude:
                raise ValueError("data.test_fraction, data.features and data.exclude are for tables; a text is"
                                 " split into train and its last val_fraction as val: remove them")
            return self
        if self.test_fraction is None:
            raise ValueError("data.test_fraction: missing key (a table needs a test split)")
        if self.val_fraction + self.test_fraction >= 1:
            raise ValueError(
                f"data.val_fraction + data.test_fraction must be below 1 to leave rows to train on,"
                f" got {self.val_fraction} + {self.test_fraction}"
            )
        if self.target in self.exclude:
            raise ValueError(f"data.exclude: {brief(self.exclude)} leaves out the target {self.target!r}")
        if self.features is not None and (self.target in self.features or len(set(self.features)) < len(self.features)):
            raise ValueError(f"data.features: {brief(self.features)} must name distinct columns other than the target"
                             f" {self.target!r}")
        return self

    def source_file(self, root: Path) -> Path:
        """data.source in the repo at `root`, checked to be a regular file inside it (links resolved), else one line.

        Stage plan checks it before DVC hashes it (a FIFO or /dev/zero would hang DVC), generate before reading it.
        The default source may be missing: stage synthesize writes it after plan.
        """
        path = root / self.source
        try:
            mode = os.stat(path).st_mode  # follows links; a FIFO's stat does not block
        except FileNotFoundError:
            if self.source == SYNTHETIC_SOURCE:
                return path
            raise PipelineError(f"data.source: {brief(self.source)} not found") from None
        except OSError as error:
            raise PipelineError(f"data.source: cannot read {brief(self.source)} ({error.strerror})") from None
        if not path.resolve().is_relative_to(root.resolve()):
            raise PipelineError(f"data.source: {brief(self.source)} links to {brief(str(path.resolve()))}, outside"
                                " the repo; copy the file in (and `dvc add` it)")
        if stat.S_ISDIR(mode):
            raise PipelineError(f"data.source: {brief(self.source)} is a directory, not a file")
        if not stat.S_ISREG(mode):
            raise PipelineError(f"data.source: {brief(self.source)} is not a regular file (a FIFO, a device, ...)")
        return path

    def split_sizes(self, n_rows: int) -> dict[str, int]:
        """Rows per split of a table of `n_rows`: val and test are rounded down, train takes the rest."""
        val = int(n_rows * self.val_fraction)
        test = int(n_rows * self.test_fraction)
        return {"train": n_rows - val - test, "val": val, "test": test}


class SyntheticSpec(Spec):
    """Stage synthesize: the synthetic table, or (both None) no table, where data.source is another file.

    The unused spec stays the same whatever seed and synthetic say, so editing them reruns no synthesize, and
    switching data.source to or from the synthetic table reruns it (its run cache restores the table).
    """

    seed: int | None
    synthetic: SyntheticParams | None

    @model_validator(mode="after")
    def _both_or_neither(self) -> "SyntheticSpec":
        if (self.seed is None) != (self.synthetic is None):
            raise ValueError("seed and synthetic: give both (the synthetic table) or neither (no table)")
        return self


class DataSpec(Spec):
    """Stage generate: the splits of data.source, shuffled by the seed, encoded for the task."""

    seed: int
    task: Task
    data: DataParams
