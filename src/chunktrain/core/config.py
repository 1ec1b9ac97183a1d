"""params.yaml: one typed schema, validated once by stage plan; and the spec each stage reads, resolved from it."""

import math
import os
import re
import stat
import typing
from pathlib import Path, PurePosixPath
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from chunktrain.core.errors import PipelineError, brief, did_you_mean

INIT = "init"  # the `from` of a chunk that starts from the init stage's checkpoint
# A chunk name becomes a stage name, a shell word and a file stem: letters, digits, _ and - only, no path parts.
CHUNK_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_-]{0,63}")


def read_yaml(text: str):
    """Parse YAML exactly as DVC does (dvc.utils.serialize.parse_yaml): ruamel's safe loader, YAML 1.2.

    So `010` is 10, `yes` and `1:30` are strings and `1e-3` is a float, in params.yaml, dvc.lock and here.
    Importing ruamel directly, not through dvc, keeps DVC's import time out of stage plan.
    """
    from ruamel.yaml import YAML

    return YAML(typ="safe").load(text) or {}


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, allow_inf_nan=False)


Fraction = Annotated[float, Field(gt=0, lt=1)]
Task = Literal["regression", "classification", "language_model"]
TABLE_SUFFIXES = (".csv", ".parquet")
TEXT_SUFFIX = ".txt"  # a UTF-8 text: the language_model task, chunks counted in steps
BUILT_IN_MODELS = ("mlp", "gpt")  # core/model.py's ARCHITECTURES
MAX_ARGS_VALUES = 10_000  # in model.args, counting every item of its lists and mappings
# A user's own model: a function in a module under src/models/, which the model stages depend on (dvc.yaml).
OWN_MODEL = re.compile(r"models(\.[A-Za-z_][A-Za-z0-9_]*)+:[A-Za-z_][A-Za-z0-9_]*")


class SyntheticParams(_Section):
    """The default data source: a random teacher network's outputs plus noise, written by stage synthesize."""

    n_samples: int = Field(gt=0)  # rows before the split
    n_features: int = Field(gt=0)  # feature columns x0, x1, ...
    noise: float = Field(ge=0)  # std of the Gaussian noise on the teacher's output


# Written by stage synthesize whatever data.source says; a params.yaml for your own data may leave the section out.
SYNTHETIC_DEFAULT = SyntheticParams(n_samples=200_000, n_features=16, noise=0.1)
SYNTHETIC_SOURCE = "data/raw/synthetic.parquet"  # stage synthesize's out in dvc.yaml, the default data.source
URL = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*:")  # a scheme (http:, ssh:, s3:, remote:, file:, C:): not a repo path


class DataParams(_Section):
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


class ModelParams(_Section):
    task: Task | None = None  # None: language_model for a text, else regression
    # a name in ARCHITECTURES (core/model.py), or your own builder under src/models/, e.g. models.my_net:build
    arch: str = "mlp"
    args: dict[str, Any] = {}  # passed to the builder by keyword; stored in every checkpoint

    @field_validator("args")
    @classmethod
    def _args_are_json(cls, args: dict) -> dict:
        """Plain JSON values, and few: a YAML alias bomb here would otherwise expand as plan writes the specs."""
        budget, pending = MAX_ARGS_VALUES, list(args.items())
        while pending:
            key, value = pending.pop()
            budget -= 1
            if budget < 0:
                raise ValueError(f"model.args: more than {MAX_ARGS_VALUES} values; a builder's arguments are few")
            if not isinstance(key, str):
                raise ValueError(f"model.args: key {brief(key)} must be a string")
            if isinstance(value, dict):
                pending += value.items()
            elif isinstance(value, list):
                pending += ((key, item) for item in value)
            elif not (value is None or isinstance(value, (str, bool, int)) or isinstance(value, float)
                      and math.isfinite(value)):
                raise ValueError(f"model.args.{key}: {brief(value)} is not a JSON value (a string, number, boolean,"
                                 " null, list or mapping)")
        return args

    @model_validator(mode="after")
    def _arch_is_a_name(self) -> "ModelParams":
        if not (self.arch in BUILT_IN_MODELS or OWN_MODEL.fullmatch(self.arch)):
            raise ValueError(f"model.arch: {brief(self.arch)} must be a built-in model ({', '.join(BUILT_IN_MODELS)})"
                             " or a builder under src/models/ as models.<module>:<function>"
                             + did_you_mean(self.arch, BUILT_IN_MODELS))
        return self


class ScheduleParams(_Section):
    """The lr over the global position in the chunks' unit (epochs, or steps for a text); see schedule.py."""

    warmup: float = Field(default=0.0, ge=0)  # linear warmup from 0 to the lr over the first `warmup` epochs or steps
    decay: Literal["none", "cosine", "linear"] = "none"
    total: float | None = Field(default=None, gt=0)  # where a decay reaches min_lr
    min_lr: float = Field(default=0.0, ge=0)

    @model_validator(mode="after")
    def _decay_has_an_end(self) -> "ScheduleParams":
        if self.decay == "none" and self.total is not None:
            raise ValueError(f"train.schedule.total: {self.total} is used only by decay cosine or"
                             " linear, and decay is none; remove it or choose a decay")
        if self.decay != "none" and self.total is None:
            raise ValueError(f"train.schedule.total: decay {self.decay} needs the global position where it"
                             " reaches min_lr")
        if self.total is not None and self.total <= self.warmup:
            raise ValueError(f"train.schedule.total: {self.total} must be after the warmup's end"
                             f" (warmup {self.warmup})")
        return self


class ChunkParams(_Section):
    parent: str = Field(alias="from")
    epochs: int | None = Field(default=None, gt=0)  # a table's chunks count epochs
    steps: int | None = Field(default=None, gt=0)  # a text's chunks count optimizer steps
    lr: float | None = Field(default=None, gt=0)
    batch_size: int | None = Field(default=None, gt=0)
    weight_decay: float | None = Field(default=None, ge=0)
    nproc: int | None = Field(default=None, gt=0)
    cooldown: Literal["linear", "cosine"] | None = None  # from the lr at the chunk's start down to min_lr
    launcher: Literal["local", "slurm"] | None = None  # where it and the chunks continuing it run (SlurmParams)
    slurm: dict[str, Any] | None = None  # keys of train.slurm to override, for this chunk and those continuing it


Dtype = Literal["float32", "bfloat16"]
# What weight decay applies to: matrices (not biases, norms or embeddings), matrices_and_embeddings (nanoGPT's
# choice: every parameter of two or more dimensions), all.
DecayParams = Literal["matrices", "matrices_and_embeddings", "all"]


class TrainSettings(_Section):
    """A chunk's effective knobs: its own overrides, else the train section's values."""

    epochs: int | None  # one of epochs (a table) and steps (a text)
    steps: int | None
    lr: float
    batch_size: int
    weight_decay: float
    betas: list[float]
    grad_clip: float | None
    grad_accum: int
    dtype: Dtype
    eval_every: int | None  # a text's; None for a table
    eval_batches: int | None
    schedule: ScheduleParams
    cooldown: Literal["linear", "cosine"] | None

    @property
    def rounds(self) -> int:
        """The chunk's length in rounds: its epochs, or its steps in rounds of eval_every (a val loss ends each)."""
        return self.epochs if self.epochs is not None else self.steps // self.eval_every


# The launcher: where a chunk's processes run. None of it changes a result, so none of it enters the chunk's
# spec (data/plan/train/<chunk>.json, which its stage depends on): plan writes it to data/plan/launch/<chunk>.json,
# which src/train.py reads beside the snapshot policy, so editing it reruns nothing. docs/slurm.md is the guide.

SLURM_TIME = re.compile(r"(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?")  # M, M:S, H:M:S, D-H, D-H:M, D-H:M:S


def slurm_seconds(value: str | int) -> int:
    """SLURM's --time in seconds: minutes, minutes:seconds, hours:minutes:seconds, days-hours[:minutes[:seconds]]."""
    match = SLURM_TIME.fullmatch(str(value))
    if not match:
        raise ValueError(f"train.slurm.time: {brief(value)} is not a SLURM time limit (minutes, H:MM:SS or"
                         " D-HH:MM:SS)")
    days, first, second, third = (None if part is None else int(part) for part in match.groups())
    if days is not None:  # D-H[:M[:S]]
        hours, minutes, seconds = first, second or 0, third or 0
    elif third is not None:  # H:M:S
        hours, minutes, seconds = first, second, third
    else:  # M[:S]
        hours, minutes, seconds = 0, first, second or 0
    return (((days or 0) * 24 + hours) * 60 + minutes) * 60 + seconds


class SlurmParams(_Section):
    """train.launcher slurm: each chunk is a job, submitted again from its snapshot when its time runs out."""

    partition: str | None = None  # None: the cluster's default partition
    account: str | None = None
    nodes: int = Field(default=1, gt=0)  # the chunk's nproc processes split evenly over them, one torchrun each
    cpus_per_task: int | None = Field(default=None, gt=0)  # CPUs per node for its processes; None: SLURM's default
    gpus_per_node: int | None = Field(default=None, gt=0)
    time: str | int = "1:00:00"  # each job's wall-time limit, in SLURM's format (a number is minutes)
    signal_lead: int = Field(default=300, gt=0)  # seconds before the limit that SLURM tells the trainer to stop
    sbatch_args: list[str] = []  # more sbatch options, e.g. ["--qos=long", "--constraint=a100"]
    srun_args: list[str] = []  # more srun options for the one torchrun per node of a multi-node chunk
    max_restarts: int = Field(default=20, ge=0)  # jobs after the first, per `dvc repro` of the chunk

    @model_validator(mode="after")
    def _lead_inside_the_limit(self) -> "SlurmParams":
        if self.signal_lead >= slurm_seconds(self.time):
            raise ValueError(f"train.slurm.signal_lead: {self.signal_lead} s leaves no time to train in a job of"
                             f" time {self.time!r}; it must be shorter than the time limit")
        return self


class TrainParams(_Section):
    optimizer: Literal["sgd", "adam", "adamw"]
    lr: float = Field(gt=0)
    batch_size: int = Field(gt=0)
    weight_decay: float = Field(ge=0)
    decay_params: DecayParams = "matrices"  # see core/model.py decay_groups
    betas: list[Annotated[float, Field(ge=0, lt=1)]] = Field(default=[0.9, 0.999], min_length=2, max_length=2)
    grad_clip: float | None = Field(default=None, gt=0)  # max norm of the gradient; None: no clipping
    grad_accum: int = Field(default=1, gt=0)  # micro-batches of batch_size per optimizer step
    dtype: Dtype = "float32"  # bfloat16: autocast forward passes (on CPU too)
    eval_every: int | None = Field(default=None, gt=0)  # text only: steps between val losses (tables: every epoch)
    eval_batches: int = Field(default=20, gt=0)  # text only: seeded val batches per val loss
    nproc: int = Field(default=1, gt=0)  # processes per chunk; over 1 runs the chunk under torchrun with DDP
    device: Literal["auto", "cpu", "cuda"] = "auto"  # auto: CUDA where present
    threads: int | None = Field(default=None, gt=0)  # torch threads per process; None: its CPUs / its node's processes
    snapshot_every_steps: int | None = Field(gt=0)  # None: no step-based snapshots
    snapshot_every_seconds: float | None = Field(gt=0)  # None: no time-based snapshots
    schedule: ScheduleParams = ScheduleParams()
    chunks: dict[str, ChunkParams] = Field(min_length=1)
    # Where chunks run: here, or each as a SLURM job (inherited like nproc); changes no result, see SlurmParams.
    launcher: Literal["local", "slurm"] = "local"
    slurm: SlurmParams = SlurmParams()

    @model_validator(mode="after")
    def _chunks_form_a_tree(self) -> "TrainParams":
        for name, chunk in self.chunks.items():
            if not isinstance(name, str) or name == INIT or not CHUNK_NAME.fullmatch(name):
                raise ValueError(f"train.chunks: name {brief(name)} must match {CHUNK_NAME.pattern}"
                                 f" and not be {INIT!r}")
            if chunk.parent != INIT and chunk.parent not in self.chunks:
                raise ValueError(f"train.chunks.{name}.from: {brief(chunk.parent)} names no chunk (nor {INIT!r})"
                                 + did_you_mean(chunk.parent, [INIT, *self.chunks]))
            self.lineage(name)  # raises on a cycle
            if chunk.parent != INIT and self.chunks[chunk.parent].cooldown:
                raise ValueError(f"train.chunks.{name}.from: {chunk.parent!r} is a cooldown chunk, which ends its"
                                 " branch; start from the chunk it cools down instead")
            if self.schedule.min_lr >= self.settings(name).lr:
                raise ValueError(f"train.schedule.min_lr: {self.schedule.min_lr} must be below the lr of chunk"
                                 f" {name} ({self.settings(name).lr})")
        return self

    @model_validator(mode="after")
    def _launches_are_valid(self) -> "TrainParams":
        for name in self.chunks:
            self.launch(name)
        return self

    def launch(self, name: str) -> "LaunchSpec | None":
        """How chunk `name` is launched: None to run it here, else its SLURM job, train.slurm with the overrides
        of the chunks down its lineage."""
        if self.inherited(name, "launcher") != "slurm":
            return None
        merged = self.slurm.model_dump()
        for link in self.lineage(name):
            merged.update(self.chunks[link].slurm or {})
        try:
            slurm = SlurmParams.model_validate(merged)
        except ValidationError as error:
            errors = error.errors(include_url=False)
            raise ValueError(f"train.chunks.{name}.slurm: " + "; ".join(_describe(e, SlurmParams)
                                                                        for e in errors[:3])) from None
        nproc = self.inherited(name, "nproc")
        if nproc % slurm.nodes:
            raise ValueError(f"train.slurm.nodes: chunk {name}'s {nproc} processes (nproc) do not split evenly over"
                             f" {slurm.nodes} nodes")
        return LaunchSpec(launcher="slurm", slurm=slurm)

    def lineage(self, name: str) -> list[str]:
        """The chunks from the first after init down to `name`, in training order."""
        chain = [name]
        while (parent := self.chunks[chain[-1]].parent) != INIT:
            if parent in chain:
                raise ValueError(f"train.chunks.{name}.from: the chain {' -> '.join(chain + [parent])} is a cycle")
            chain.append(parent)
        return chain[::-1]

    def inherited(self, name: str, key: str):
        """A chunk's own value of `key`, else that of the chunk it continues, and so on up, else the train default."""
        for link in reversed(self.lineage(name)):
            if (value := getattr(self.chunks[link], key)) is not None:
                return value
        return getattr(self, key)

    def settings(self, name: str) -> TrainSettings:
        """The effective knobs of chunk `name`: lr, batch size and weight decay follow its lineage."""
        chunk = self.chunks[name]
        return TrainSettings(
            epochs=chunk.epochs,
            steps=chunk.steps,
            lr=self.inherited(name, "lr"),
            batch_size=self.inherited(name, "batch_size"),
            weight_decay=self.inherited(name, "weight_decay"),
            betas=self.betas, grad_clip=self.grad_clip, grad_accum=self.grad_accum, dtype=self.dtype,
            eval_every=self.eval_every, eval_batches=self.eval_batches,
            schedule=self.schedule,
            cooldown=chunk.cooldown,
        )


class Params(_Section):
    seed: int = Field(ge=0, lt=2**32)
    synthetic: SyntheticParams = SYNTHETIC_DEFAULT
    data: DataParams
    model: ModelParams
    train: TrainParams

    @property
    def task(self) -> str:
        return self.model.task or ("language_model" if self.data.is_text else "regression")

    @model_validator(mode="after")
    def _data_fits_model_and_chunks(self) -> "Params":
        text, train = self.data.is_text, self.train
        if text != (self.task == "language_model"):
            raise ValueError(f"model.task: {self.task} does not fit data.source {brief(self.data.source)}: a .txt"
                             " text is for language_model, a table for regression or classification")
        if text and not (isinstance(self.model.args.get("block_size"), int) and self.model.args["block_size"] > 0):
            raise ValueError("model.args.block_size: a language model needs the length of the token windows it"
                             " trains on, a positive integer")
        if text and train.eval_every is None:
            raise ValueError("train.eval_every: missing key (a text's chunks count steps; say every how many steps"
                             " the val loss is measured)")
        if not text and train.eval_every is not None:
            raise ValueError("train.eval_every: tables measure the val loss after every epoch; remove it")
        unit, other = ("steps", "epochs") if text else ("epochs", "steps")
        for name, chunk in train.chunks.items():
            length = getattr(chunk, unit)
            if length is None or getattr(chunk, other) is not None:
                raise ValueError(f"train.chunks.{name}: give its length as {unit} (not {other}): the chunks of a"
                                 f" {'text' if text else 'table'} count {unit}")
            if text and length % train.eval_every:
                raise ValueError(f"train.chunks.{name}.steps: {length} must be a multiple of train.eval_every"
                                 f" ({train.eval_every}): every chunk ends with a val loss")
        return self


def load_params(path: str | Path = "params.yaml") -> Params:
    """Read and validate params.yaml; any problem is one PipelineError naming the key and value."""
    from ruamel.yaml import YAMLError

    path = Path(path)
    try:
        raw = read_yaml(path.read_text())
    except FileNotFoundError:
        raise PipelineError(f"{path} not found") from None
    except (YAMLError, UnicodeDecodeError) as error:
        reason = " ".join(str(error).split())
        raise PipelineError(f"{path} is not valid YAML: {reason[:300]}") from None
    return _validated(Params, raw, path)


def _validated(model: type[BaseModel], value, where, json: bool = False):
    try:
        return model.model_validate_json(value) if json else model.model_validate(value)
    except ValidationError as error:
        errors = error.errors(include_url=False)
        more = f"; and {len(errors) - 3} more" if len(errors) > 3 else ""
        raise PipelineError(f"{where}: " + "; ".join(_describe(e, model) for e in errors[:3]) + more) from None


def _describe(error: dict, model: type[BaseModel]) -> str:
    key = ".".join(str(part)[:64] for part in error["loc"]) or "top level"
    if error["type"] == "extra_forbidden":
        return f"{key}: unknown key{_near_key(model, error['loc'])}"
    if error["type"] == "missing":
        return f"{key}: missing key"
    message = error["msg"].removeprefix("Value error, ")
    if error["type"] == "value_error":  # our own validators name the key and value themselves
        return message
    return f"{key}: {message}, got {brief(error['input'])}"


def _near_key(model, loc: tuple) -> str:
    """", did you mean 'x'?" for the known key of the section at loc[:-1] nearest to loc[-1], or nothing."""
    for part in loc[:-1]:  # down the sections; a mapping of sections (the chunks) by its values' type
        if isinstance(model, type) and issubclass(model, BaseModel):
            field = next((f for name, f in model.model_fields.items() if part in (name, f.alias)), None)
            model = field.annotation if field else None
        else:
            model = typing.get_args(model)[-1] if typing.get_args(model) else None
        while typing.get_args(model) and type(None) in typing.get_args(model):  # X | None
            model = typing.get_args(model)[0]
    if not (isinstance(model, type) and issubclass(model, BaseModel)):
        return ""
    return did_you_mean(loc[-1], [field.alias or name for name, field in model.model_fields.items()])


# What each stage reads: one spec per stage, resolved from params.yaml by stage plan. A stage reads its spec
# and nothing of params.yaml, so its spec file is its real input and DVC's dep on it is exact.


class _Spec(_Section):
    @classmethod
    def read(cls, path: str | Path):
        """The spec stage plan wrote to `path`; missing or malformed is one line."""
        try:
            text = Path(path).read_text()
        except OSError as error:
            raise PipelineError(f"cannot read {path} ({error.strerror}); run `dvc repro` (stage plan writes it)")
        return _validated(cls, text, path, json=True)

    def text(self) -> str:
        return self.model_dump_json(indent=1, by_alias=True) + "\n"


class SyntheticSpec(_Spec):
    """Stage synthesize: the synthetic table."""

    seed: int
    synthetic: SyntheticParams


class DataSpec(_Spec):
    """Stage generate: the splits of data.source, shuffled by the seed, encoded for the task."""

    seed: int
    task: Task
    data: DataParams


class ModelSpec(_Spec):
    """What init builds besides the data's widths: the architecture and the optimizer."""

    task: Task
    arch: str
    args: dict[str, Any]
    optimizer: Literal["sgd", "adam", "adamw"]
    decay_params: DecayParams


class InitSpec(_Spec):
    """Stage init: the seeded model and optimizer."""

    seed: int
    model: ModelSpec


class ChunkSpec(_Spec):
    """Stage train@<name>: what decides a chunk's result besides its parent checkpoint, the dataset and the code.

    The one definition: stage plan writes it, DVC tracks it, the checkpoint's lineage records it, and the
    snapshot fingerprint and every stale check compare it (through the lineage id, checkpoint.lineage_id).
    """

    name: str
    parent: str  # a chunk's name, or INIT
    init: InitSpec  # the seed (it also orders every epoch's data) and the model
    settings: TrainSettings
    nproc: int  # over 1: the same result up to float rounding, not bit for bit, so it is part of the recipe
    device: Literal["auto", "cpu", "cuda"]


class EvaluateSpec(_Spec):
    """Stage evaluate: every chunk's spec, in params.yaml's order, and the init they grow from."""

    init: InitSpec
    chunks: dict[str, ChunkSpec]

    def leaves(self) -> list[str]:
        """Chunks no other chunk starts from: the final checkpoint of each branch."""
        parents = {chunk.parent for chunk in self.chunks.values()}
        return [name for name in self.chunks if name not in parents]


class LaunchSpec(_Spec):
    """data/plan/launch/<chunk>.json, for a chunk run as a SLURM job (none: it runs here). No stage depends on it."""

    launcher: Literal["slurm"]
    slurm: SlurmParams


class Runtime(_Spec):
    """How a chunk runs on this machine: when it writes snapshots, and its threads. Every chunk reads it but none
    depends on it: editing it reruns nothing. Threads can change the last bits of a result (a text's matrix
    products split their sums by thread), so the count a chunk ran with is part of its checkpoint's lineage."""

    every_steps: int | None
    every_seconds: float | None
    threads: int | None


def plan(params: Params) -> dict[str, _Spec]:
    """Every stage's spec, by its file name under data/plan/."""
    model = params.model
    init = InitSpec(seed=params.seed, model=ModelSpec(task=params.task, arch=model.arch, args=model.args,
                                                      optimizer=params.train.optimizer,
                                                      decay_params=params.train.decay_params))
    # A table measures its val loss on the whole val split after every epoch: eval_batches does not reach it.
    text_only = {} if params.data.is_text else {"eval_batches": None}
    chunks = {name: ChunkSpec(name=name, parent=chunk.parent, init=init,
                              settings=params.train.settings(name).model_copy(update=text_only),
                              nproc=params.train.inherited(name, "nproc"),
                              device=params.train.device)
              for name, chunk in params.train.chunks.items()}
    return {
        "synthetic.json": SyntheticSpec(seed=params.seed, synthetic=params.synthetic),
        "data.json": DataSpec(seed=params.seed, task=params.task, data=params.data),
        "init.json": init,
        "evaluate.json": EvaluateSpec(init=init, chunks=chunks),
        "runtime.json": Runtime(every_steps=params.train.snapshot_every_steps,
                                every_seconds=params.train.snapshot_every_seconds, threads=params.train.threads),
        **{f"train/{name}.json": spec for name, spec in chunks.items()},
        **{f"launch/{name}.json": launch for name in chunks if (launch := params.train.launch(name))},
    }
