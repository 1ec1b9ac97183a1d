"""The specs stage plan writes and the other stages read (data/plan/), and how a spec is read: what a stage is told.

A stage reads its spec and nothing of params.yaml, so its spec file is its real input and DVC's dep on it is
exact. The chunk's spec (ChunkSpec) is the one definition of what decides a chunk besides its parent, the dataset
and the code: DVC tracks it, the checkpoint's lineage records it, and every stale check compares it.
"""

import re
import typing
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from chunktrain.recipe.errors import PipelineError, brief, did_you_mean

INIT = "init"  # the `from` of a chunk that starts from the init stage's checkpoint
# A chunk name becomes a stage name, a shell word and a file stem: letters, digits, _ and - only, no path parts.
CHUNK_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_-]{0,63}")
Task = Literal["regression", "classification", "language_model"]
BUILT_IN_MODELS = ("mlp", "gpt")  # model.py's ARCHITECTURES
# A user's own model: a function in a module under src/models/, which the model stages depend on (dvc.yaml).
OWN_MODEL = re.compile(r"models(\.[A-Za-z_][A-Za-z0-9_]*)+:[A-Za-z_][A-Za-z0-9_]*")
Dtype = Literal["float32", "bfloat16"]
CONFIG, WEIGHTS, TOKENIZER = "config.json", "model.safetensors", "tokenizer.json"  # a Hugging Face model's files
MAX_VOCAB = 1_000_000  # tokens in a text's vocabulary; the largest published ones have about 260,000
# What weight decay applies to: matrices (not biases, norms or embeddings), matrices_and_embeddings (nanoGPT's
# choice: every parameter of two or more dimensions), all.
DecayParams = Literal["matrices", "matrices_and_embeddings", "all"]


class Section(BaseModel):
    """A block of params or of a spec: unknown keys, wrong types and NaN refused."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, allow_inf_nan=False)


def validated(model: type[BaseModel], value, where, json: bool = False):
    """`value` (a mapping, or JSON text) as a `model`; a problem is one PipelineError, naming `where` and the keys."""
    try:
        return model.model_validate_json(value) if json else model.model_validate(value)
    except ValidationError as error:
        errors = error.errors(include_url=False)
        more = f"; and {len(errors) - 3} more" if len(errors) > 3 else ""
        raise PipelineError(f"{where}: " + "; ".join(describe(e, model) for e in errors[:3]) + more) from None


def describe(error: dict, model: type[BaseModel]) -> str:
    """One pydantic error as "key: what is wrong"."""
    key = ".".join(str(part)[:64] for part in error["loc"]) or "top level"
    if error["type"] == "extra_forbidden":
        return f"{key}: unknown key{near_key(model, error['loc'])}"
    if error["type"] == "missing":
        return f"{key}: missing key"
    message = error["msg"].removeprefix("Value error, ")
    if error["type"] == "value_error":  # our own validators name the key and value themselves
        return message
    return f"{key}: {message}, got {brief(error['input'])}"


def near_key(model, loc: tuple) -> str:
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


class ScheduleParams(Section):
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


class TrainSettings(Section):
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
    compile: bool  # torch.compile'd steps round differently from eager ones, so it decides the bytes
    eval_every: int | None  # a text's; None for a table
    eval_batches: int | None
    schedule: ScheduleParams
    cooldown: Literal["linear", "cosine"] | None

    @property
    def rounds(self) -> int:
        """The chunk's length in rounds: its epochs, or its steps in rounds of eval_every (a val loss ends each)."""
        return self.epochs if self.epochs is not None else self.steps // self.eval_every


class Spec(Section):
    """A stage's spec: one JSON file under data/plan/, written by stage plan."""

    @classmethod
    def read(cls, path: str | Path):
        """The spec stage plan wrote to `path`; missing or malformed is one line."""
        try:
            text = Path(path).read_text()
        except OSError as error:
            raise PipelineError(f"cannot read {path} ({error.strerror}); run `dvc repro` (stage plan writes it)")
        return validated(cls, text, path, json=True)

    def text(self) -> str:
        return self.model_dump_json(indent=1, by_alias=True) + "\n"


class ModelSpec(Spec):
    """What init builds besides the data's widths: the architecture and the optimizer."""

    task: Task
    arch: str
    args: dict[str, Any]
    optimizer: Literal["sgd", "adam", "adamw"]
    decay_params: DecayParams
    pretrained: str | None = None  # a Hugging Face GPT-2 folder whose weights init loads (recipe/pretrained.py)


class InitSpec(Spec):
    """Stage init: the seeded model and optimizer."""

    seed: int
    model: ModelSpec


class ChunkSpec(Spec):
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


class EvaluateSpec(Spec):
    """Stage evaluate: every chunk's spec, in params.yaml's order, and the init they grow from."""

    init: InitSpec
    chunks: dict[str, ChunkSpec]

    def leaves(self) -> list[str]:
        """Chunks no other chunk starts from: the final checkpoint of each branch."""
        parents = {chunk.parent for chunk in self.chunks.values()}
        return [name for name in self.chunks if name not in parents]


