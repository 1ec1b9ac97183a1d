"""Stage synthesize's and generate's params and specs: the synthetic table, and data.source split for the task."""

import os
import re
import stat
from pathlib import Path, PurePosixPath
from typing import Annotated

from pydantic import Field, model_validator

from chunktrain.recipe.errors import PipelineError, brief, did_you_mean
from chunktrain.recipe.specs import MAX_VOCAB, Section, Spec, Task

Fraction = Annotated[float, Field(gt=0, lt=1)]
TABLE_SUFFIXES = (".csv", ".parquet")
TEXT_SUFFIX = ".txt"  # a UTF-8 text: the language_model task, chunks counted in steps
# A source without a suffix is a folder of texts: its .txt files, subfolders included, hidden names (.*) left out.
# What you bring besides the data: a tokenizer.json, or a Hugging Face model's folder. Stages generate and init
# depend on the whole folder (dvc.yaml), the one path there that a params.yaml without these keys can name.
PRETRAINED = "pretrained"
TOKENIZERS = ("char", "bpe")  # a character per token, or byte-level BPE trained by stage generate
MIN_BPE_VOCAB = 257  # the 256 bytes and <|endoftext|>


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
    # the path of a CSV or parquet table, a .txt text, or a folder of .txt texts, inside the repo; dvc.yaml reads it too
    source: str
    target: str = "y"  # the target column
    features: list[str] | None = Field(default=None, min_length=1)  # None: every column but the target
    exclude: list[str] = []  # columns left out of the features, e.g. constant ones
    val_fraction: Fraction
    test_fraction: Fraction | None = None  # tables only: a text's val split is its last val_fraction
    # texts only: char, bpe, or a tokenizer.json under pretrained/; None: char, or model.pretrained's tokenizer
    tokenizer: str | None = None
    vocab_size: int | None = Field(default=None, ge=MIN_BPE_VOCAB, le=MAX_VOCAB)  # bpe only: tokens to learn

    @property
    def is_folder(self) -> bool:
        """Whether data.source is a folder of .txt texts: a name without a suffix."""
        return PurePosixPath(self.source).suffix == ""

    @property
    def is_text(self) -> bool:
        return PurePosixPath(self.source).suffix.lower() == TEXT_SUFFIX or self.is_folder

    @model_validator(mode="after")
    def _splits_and_columns(self) -> "DataParams":
        path = PurePosixPath(self.source)
        if URL.match(self.source):
            raise ValueError(f"data.source: {brief(self.source)} is a URL; DVC would fetch it. Bring the file into"
                             " the repo with `dvc import-url URL data/own/FILE` and give that path")
        if (path.is_absolute() or ".." in path.parts or not path.parts
                or path.suffix.lower() not in (*TABLE_SUFFIXES, TEXT_SUFFIX, "")):
            raise ValueError(f"data.source: {brief(self.source)} must be the relative path of a .csv or .parquet"
                             " table, a .txt text, or a folder of .txt texts, inside the repo")
        if self.is_text:
            if self.test_fraction is not None or self.features is not None or self.exclude:
                raise ValueError("data.test_fraction, data.features and data.exclude are for tables; a text is"
                                 " split into train and its last val_fraction as val: remove them")
            self._check_tokenizer()
            return self
        if self.tokenizer is not None or self.vocab_size is not None:
            raise ValueError("data.tokenizer and data.vocab_size are for a .txt text; a table has no tokens: remove"
                             " them")
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

    def _check_tokenizer(self) -> None:
        if self.tokenizer in (None, *TOKENIZERS):
            if self.tokenizer == "bpe" and self.vocab_size is None:
                raise ValueError("data.vocab_size: missing key (the tokens data.tokenizer bpe learns)")
            if self.tokenizer in (None, "char") and self.vocab_size is not None:
                raise ValueError("data.vocab_size: is for data.tokenizer bpe alone (char takes the text's characters):"
                                 " remove it")
            return
        if not in_pretrained(self.tokenizer) or PurePosixPath(self.tokenizer).suffix != ".json":
            raise ValueError(f"data.tokenizer: {brief(self.tokenizer)} must be {' or '.join(TOKENIZERS)}, or the path"
                             f" of a tokenizer.json under {PRETRAINED}/ (e.g. {PRETRAINED}/gpt2/tokenizer.json)"
                             + did_you_mean(self.tokenizer, TOKENIZERS))
        if self.vocab_size is not None:
            raise ValueError("data.vocab_size: is for data.tokenizer bpe alone (a tokenizer.json has its own):"
                             " remove it")

    @property
    def tokenizer_file(self) -> str | None:
        """The tokenizer.json data.tokenizer names, or None (characters, or BPE trained by generate)."""
        return None if self.tokenizer in (None, *TOKENIZERS) else self.tokenizer

    def source_files(self, root: Path) -> list[Path]:
        """data.source's files in the repo at `root`: the table or the text, or a folder's texts in the order they are
        read (text_files). Each is checked to be a regular file inside the repo (links resolved), else one line; and
        so is data.tokenizer's tokenizer.json.

        Stage plan checks them before DVC hashes them (a FIFO or /dev/zero would hang DVC), generate before reading.
        The default source may be missing: stage synthesize writes it after plan.
        """
        if self.tokenizer_file:
            repo_file(root, "data.tokenizer", self.tokenizer_file)
        if self.is_folder:
            return text_files(root, "data.source", self.source)
        return [repo_file(root, "data.source", self.source, may_be_missing=self.source == SYNTHETIC_SOURCE)]

    def split_sizes(self, n_rows: int) -> dict[str, int]:
        """Rows per split of a table of `n_rows`: val and test are rounded down, train takes the rest."""
        val = int(n_rows * self.val_fraction)
        test = int(n_rows * self.test_fraction)
        return {"train": n_rows - val - test, "val": val, "test": test}


def in_pretrained(name: str) -> bool:
    """Whether `name` is a relative path under pretrained/ (no URL, no way out of it)."""
    path = PurePosixPath(name)
    return not (URL.match(name) or path.is_absolute() or ".." in path.parts or len(path.parts) < 2
                or path.parts[0] != PRETRAINED)


def repo_file(root: Path, key: str, name: str, may_be_missing: bool = False, folder: bool = False) -> Path:
    """The file `name` that params `key` gives, checked to be a regular file (with `folder`: a folder) inside the repo
    at `root`."""
    path = root / name
    try:
        mode = os.stat(path).st_mode  # follows links; a FIFO's stat does not block
    except FileNotFoundError:
        if may_be_missing:
            return path
        raise PipelineError(f"{key}: {brief(name)} not found") from None
    except OSError as error:
        raise PipelineError(f"{key}: cannot read {brief(name)} ({error.strerror})") from None
    if not path.resolve().is_relative_to(root.resolve()):
        raise PipelineError(f"{key}: {brief(name)} links to {brief(str(path.resolve()))}, outside"
                            f" the repo; copy the {'folder' if folder else 'file'} in (and `dvc add` it)")
    if folder:
        if not stat.S_ISDIR(mode):
            raise PipelineError(f"{key}: {brief(name)} is not a folder (a path without a suffix names a folder of .txt"
                                " texts)")
        return path
    if stat.S_ISDIR(mode):
        raise PipelineError(f"{key}: {brief(name)} is a directory, not a file")
    if not stat.S_ISREG(mode):
        raise PipelineError(f"{key}: {brief(name)} is not a regular file (a FIFO, a device, ...)")
    return path


def text_files(root: Path, key: str, name: str) -> list[Path]:
    """The .txt files under the folder `name`, subfolders included, in the order of their paths in it (compared folder
    by folder, as Python sorts paths); names that start with a dot left out. Each is checked as repo_file checks a
    file; a link to a folder in it, which DVC does not follow as it hashes the folder, and a folder without a .txt
    file, are one line."""
    folder = repo_file(root, key, name, folder=True)
    found = []
    for top, folders, names in os.walk(folder):  # follows no link to a folder, as DVC does not
        inside = PurePosixPath(Path(top).relative_to(folder).as_posix())
        folders[:] = [entry for entry in folders if not entry.startswith(".")]
        if linked := [entry for entry in folders if os.path.islink(os.path.join(top, entry))]:
            raise PipelineError(f"{key}: {brief(str(PurePosixPath(name, inside, linked[0])))} is a link to a folder,"
                                " which DVC does not follow; copy the folder in")
        found += [inside / entry for entry in names
                  if not entry.startswith(".") and PurePosixPath(entry).suffix.lower() == TEXT_SUFFIX]
    if not found:
        raise PipelineError(f"{key}: {brief(name)} holds no {TEXT_SUFFIX} file (a folder's text is its {TEXT_SUFFIX}"
                            " files, subfolders included)")
    return [repo_file(root, key, str(PurePosixPath(name, path))) for path in sorted(found)]


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
