"""params.yaml: one typed schema, validated once, before any work."""

import re
from pathlib import Path, PurePosixPath
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from chunktrain.errors import PipelineError, brief

INIT = "init"  # the `from` of a chunk that starts from the init stage's checkpoint
# A chunk name becomes a stage name, a shell word and a file stem: letters, digits, _ and - only, no path parts.
CHUNK_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_-]{0,63}")
# Bounds that keep a typo from ending in MemoryError: the generated data (float64 while generating) and the
# model with Adam's two moments (float32) must each fit in a few tens of GB.
MAX_DATA_VALUES = 2_000_000_000  # n_samples * (n_features + 1)
MAX_PARAMETERS = 2_000_000_000  # weights and biases of the MLP

def read_yaml(text: str):
    """Parse YAML exactly as DVC does (dvc.utils.serialize.parse_yaml): ruamel's safe loader, YAML 1.2.

    So `010` is 10, `yes` and `1:30` are strings and `1e-3` is a float, in params.yaml, dvc.lock and here.
    Importing ruamel directly, not through dvc, keeps DVC's import time out of every stage.
    """
    from ruamel.yaml import YAML

    return YAML(typ="safe").load(text) or {}


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, allow_inf_nan=False)


Fraction = Annotated[float, Field(gt=0, lt=1)]


SYNTHETIC = "synthetic"  # data.source of the generated teacher-network dataset
TABLE_SUFFIXES = (".csv", ".parquet")


class DataParams(_Section):
    source: str  # `synthetic`, or the path of a CSV or parquet table inside the repo; dvc.yaml reads it too
    target: str = "y"  # the target column
    features: list[str] | None = Field(default=None, min_length=1)  # None: every column but the target
    n_samples: int | None = Field(default=None, gt=0)  # these three: source synthetic only
    n_features: int | None = Field(default=None, gt=0)
    noise: float | None = Field(default=None, ge=0)
    val_fraction: Fraction
    test_fraction: Fraction

    @model_validator(mode="after")
    def _every_split_has_rows(self) -> "DataParams":
        if self.val_fraction + self.test_fraction >= 1:
            raise ValueError(
                f"data.val_fraction + data.test_fraction must be below 1 to leave rows to train on,"
                f" got {self.val_fraction} + {self.test_fraction}"
            )
        self._check_source()
        if self.features is not None and (self.target in self.features or len(set(self.features)) < len(self.features)):
            raise ValueError(f"data.features: {brief(self.features)} must name distinct columns other than the target"
                             f" {self.target!r}")
        if self.source != SYNTHETIC:
            return self
        if self.n_samples * (self.n_features + 1) > MAX_DATA_VALUES:
            raise ValueError(f"data.n_samples * (data.n_features + 1) must be at most {MAX_DATA_VALUES:,} values"
                             f" (to fit in memory), got {self.n_samples} * ({self.n_features} + 1)")
        if min(self.split_sizes(self.n_samples).values()) < 1:
            raise ValueError(f"data.n_samples: {self.n_samples} leaves a split empty:"
                             f" {self.split_sizes(self.n_samples)}")
        return self

    def _check_source(self) -> None:
        synthetic_only = {"n_samples": self.n_samples, "n_features": self.n_features, "noise": self.noise}
        if self.source == SYNTHETIC:
            for key, value in synthetic_only.items():
                if value is None:
                    raise ValueError(f"data.{key}: missing key (data.source {SYNTHETIC} needs it)")
            return
        path = PurePosixPath(self.source)
        if path.is_absolute() or ".." in path.parts or path.suffix.lower() not in TABLE_SUFFIXES:
            raise ValueError(f"data.source: {brief(self.source)} must be {SYNTHETIC!r} or the relative path of a"
                             " .csv or .parquet file inside the repo")
        for key, value in synthetic_only.items():
            if value is not None:
                raise ValueError(f"data.{key}: used only by data.source {SYNTHETIC}; remove it for a table")

    def split_sizes(self, n_rows: int) -> dict[str, int]:
        """Rows per split of a table of `n_rows`: val and test are rounded down, train takes the rest."""
        val = int(n_rows * self.val_fraction)
        test = int(n_rows * self.test_fraction)
        return {"train": n_rows - val - test, "val": val, "test": test}


class ModelParams(_Section):
    task: Literal["regression", "classification"] = "regression"
    arch: str = Field(default="mlp", pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")  # a name in architectures.py
    hidden: list[Annotated[int, Field(gt=0)]]


class ScheduleParams(_Section):
    """The lr over global epochs: warmup, then constant (`none`) or a decay to min_lr; see schedule.py."""

    warmup_epochs: float = Field(default=0.0, ge=0)
    decay: Literal["none", "cosine", "linear"] = "none"
    total_epochs: float | None = Field(default=None, gt=0)
    min_lr: float = Field(default=0.0, ge=0)

    @model_validator(mode="after")
    def _decay_has_an_end(self) -> "ScheduleParams":
        if self.decay == "none" and self.total_epochs is not None:
            raise ValueError(f"train.schedule.total_epochs: {self.total_epochs} is used only by decay cosine or"
                             " linear, and decay is none; remove it or choose a decay")
        if self.decay != "none" and self.total_epochs is None:
            raise ValueError(f"train.schedule.total_epochs: decay {self.decay} needs the global epoch where it"
                             " reaches min_lr")
        if self.total_epochs is not None and self.total_epochs <= self.warmup_epochs:
            raise ValueError(f"train.schedule.total_epochs: {self.total_epochs} must be after the warmup's end"
                             f" (warmup_epochs {self.warmup_epochs})")
        return self


class ChunkParams(_Section):
    parent: str = Field(alias="from")
    epochs: int = Field(gt=0)
    lr: float | None = Field(default=None, gt=0)
    batch_size: int | None = Field(default=None, gt=0)
    weight_decay: float | None = Field(default=None, ge=0)
    nproc: int | None = Field(default=None, gt=0)
    cooldown: Literal["linear", "cosine"] | None = None  # from the lr at the chunk's start down to min_lr


class TrainSettings(_Section):
    """A chunk's effective knobs: its own overrides, else the train section's values."""

    epochs: int
    lr: float
    batch_size: int
    weight_decay: float
    schedule: ScheduleParams
    cooldown: Literal["linear", "cosine"] | None


class TrainParams(_Section):
    optimizer: Literal["sgd", "adam", "adamw"]
    lr: float = Field(gt=0)
    batch_size: int = Field(gt=0)
    weight_decay: float = Field(ge=0)
    nproc: int = Field(default=1, gt=0)  # processes per chunk; over 1 runs the chunk under torchrun with DDP
    device: Literal["auto", "cpu", "cuda"] = "auto"  # auto: CUDA where present
    snapshot_every_steps: int | None = Field(gt=0)  # None: no step-based snapshots
    snapshot_every_seconds: float | None = Field(gt=0)  # None: no time-based snapshots
    schedule: ScheduleParams = ScheduleParams()
    chunks: dict[str, ChunkParams] = Field(min_length=1)

    @model_validator(mode="after")
    def _chunks_form_a_tree(self) -> "TrainParams":
        for name, chunk in self.chunks.items():
            if not isinstance(name, str) or name == INIT or not CHUNK_NAME.fullmatch(name):
                raise ValueError(f"train.chunks: name {brief(name)} must match {CHUNK_NAME.pattern}"
                                 f" and not be {INIT!r}")
            if chunk.parent != INIT and chunk.parent not in self.chunks:
                raise ValueError(f"train.chunks.{name}.from: {brief(chunk.parent)} names no chunk (nor {INIT!r})")
            self.lineage(name)  # raises on a cycle
            if chunk.parent != INIT and self.chunks[chunk.parent].cooldown:
                raise ValueError(f"train.chunks.{name}.from: {chunk.parent!r} is a cooldown chunk, which ends its"
                                 " branch; start from the chunk it cools down instead")
            if self.schedule.min_lr >= self.settings(name).lr:
                raise ValueError(f"train.schedule.min_lr: {self.schedule.min_lr} must be below the lr of chunk"
                                 f" {name} ({self.settings(name).lr})")
        return self

    def lineage(self, name: str) -> list[str]:
        """The chunks from the first after init down to `name`, in training order."""
        chain = [name]
        while (parent := self.chunks[chain[-1]].parent) != INIT:
            if parent in chain:
                raise ValueError(f"train.chunks.{name}.from: the chain {' -> '.join(chain + [parent])} is a cycle")
            chain.append(parent)
        return chain[::-1]

    def leaves(self) -> list[str]:
        """Chunks no other chunk starts from: the final checkpoint of each branch."""
        parents = {chunk.parent for chunk in self.chunks.values()}
        return [name for name in self.chunks if name not in parents]

    def settings(self, name: str) -> TrainSettings:
        """The effective knobs of chunk `name`."""
        chunk = self.chunks[name]
        return TrainSettings(
            epochs=chunk.epochs,
            lr=self.lr if chunk.lr is None else chunk.lr,
            batch_size=self.batch_size if chunk.batch_size is None else chunk.batch_size,
            weight_decay=self.weight_decay if chunk.weight_decay is None else chunk.weight_decay,
            schedule=self.schedule,
            cooldown=chunk.cooldown,
        )

    def processes(self, name: str) -> int:
        """How many processes train chunk `name`: its own nproc, else train.nproc."""
        nproc = self.chunks[name].nproc
        return self.nproc if nproc is None else nproc


class Params(_Section):
    seed: int = Field(ge=0, lt=2**32)
    data: DataParams
    model: ModelParams
    train: TrainParams

    @model_validator(mode="after")
    def _model_fits_in_memory(self) -> "Params":
        if self.data.source != SYNTHETIC:  # a table's width is known only once generate reads it
            return self
        widths = [self.data.n_features, *self.model.hidden, 1]
        parameters = sum((n_in + 1) * n_out for n_in, n_out in zip(widths, widths[1:]))
        if parameters > MAX_PARAMETERS:
            raise ValueError(f"model.hidden: {brief(self.model.hidden)} makes {parameters:,} parameters with"
                             f" data.n_features {self.data.n_features}; at most {MAX_PARAMETERS:,} fit in memory")
        return self


def load_params(path: str | Path = "params.yaml") -> Params:
    """Read and validate params.yaml; any problem is one PipelineError naming the key and value."""
    return load_params_and_raw(path)[0]


def load_params_and_raw(path: str | Path = "params.yaml") -> tuple[Params, dict]:
    """load_params, and the file's values as DVC's loader reads them (for what DVC would record of it)."""
    from ruamel.yaml import YAMLError

    path = Path(path)
    try:
        raw = read_yaml(path.read_text())
    except FileNotFoundError:
        raise PipelineError(f"{path} not found") from None
    except (YAMLError, UnicodeDecodeError) as error:
        reason = " ".join(str(error).split())
        raise PipelineError(f"{path} is not valid YAML: {reason[:300]}") from None
    try:
        return Params.model_validate(raw), raw
    except ValidationError as error:
        errors = error.errors(include_url=False)
        more = f"; and {len(errors) - 3} more" if len(errors) > 3 else ""
        raise PipelineError(f"{path}: " + "; ".join(_describe(e) for e in errors[:3]) + more) from None


def _describe(error: dict) -> str:
    key = ".".join(str(part)[:64] for part in error["loc"]) or "top level"
    if error["type"] == "extra_forbidden":
        return f"{key}: unknown key"
    if error["type"] == "missing":
        return f"{key}: missing key"
    message = error["msg"].removeprefix("Value error, ")
    if error["type"] == "value_error":  # our own validators name the key and value themselves
        return message
    return f"{key}: {message}, got {brief(error['input'])}"


if __name__ == "__main__":
    import sys

    from chunktrain.errors import run_stage

    def check(path: str = "params.yaml") -> None:
        load_params(path)
        print(f"{path}: OK")

    run_stage(lambda: check(*sys.argv[1:2]))
