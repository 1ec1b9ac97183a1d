"""params.yaml: one typed schema, validated by stage plan, and plan(): the spec of every stage, resolved from it.

The chunk tree is resolved here: each chunk's settings follow its lineage (its own value, else its parent's, and
so on up, else the train section's).
"""

import math
from pathlib import Path, PurePosixPath
from typing import Annotated, Any, Literal

from pydantic import Field, ValidationError, field_validator, model_validator

from chunktrain.data.specs import (PRETRAINED, SYNTHETIC_DEFAULT, SYNTHETIC_SOURCE, DataParams, DataSpec,
                                   SyntheticParams, SyntheticSpec, in_pretrained, repo_file)
from chunktrain.recipe.errors import PipelineError, brief, did_you_mean
from chunktrain.recipe.specs import (BUILT_IN_MODELS, CHUNK_NAME, CONFIG, INIT, OWN_MODEL, TOKENIZER, WEIGHTS,
                                     ChunkSpec, DecayParams, Dtype, EvaluateSpec, InitSpec, ModelSpec, ScheduleParams,
                                     Section, Spec, Task, TrainSettings, describe, validated)
from chunktrain.runner.settings import RunPlan, RunSettings, SlurmParams

MAX_ARGS_VALUES = 10_000  # in model.args, counting every item of its lists and mappings


def read_yaml(text: str):
    """Parse YAML exactly as DVC does (dvc.utils.serialize.parse_yaml): ruamel's safe loader, YAML 1.2.

    So `010` is 10, `yes` and `1:30` are strings and `1e-3` is a float, in params.yaml, dvc.lock and here.
    Importing ruamel directly, not through dvc, keeps DVC's import time out of stage plan.
    """
    from ruamel.yaml import YAML

    return YAML(typ="safe").load(text) or {}


class ModelParams(Section):
    task: Task | None = None  # None: language_model for a text, else regression
    # a name in ARCHITECTURES (recipe/model.py), or your own builder under src/models/, e.g. models.my_net:build
    arch: str = "mlp"
    args: dict[str, Any] = {}  # passed to the builder by keyword; stored in every checkpoint
    # a Hugging Face GPT-2 folder under pretrained/ (config.json, model.safetensors, tokenizer.json) whose weights
    # init loads into the built-in gpt; model.args then gives block_size and dropout alone
    pretrained: str | None = None

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
    def _pretrained_is_a_gpt2_folder(self) -> "ModelParams":
        if self.pretrained is None:
            return self
        if not in_pretrained(self.pretrained):
            raise ValueError(f"model.pretrained: {brief(self.pretrained)} must be the path of a folder under"
                             f" {PRETRAINED}/ (e.g. {PRETRAINED}/gpt2)")
        if self.arch != "gpt":
            raise ValueError(f"model.arch: {brief(self.arch)}; model.pretrained loads into the built-in gpt alone")
        if extra := sorted(self.args.keys() - {"block_size", "dropout"}):
            raise ValueError(f"model.args: {', '.join(extra)} come from model.pretrained's {CONFIG}; give block_size"
                             " and dropout alone")
        return self

    def pretrained_file(self, name: str) -> str:
        """The path of model.pretrained's file `name`."""
        return str(PurePosixPath(self.pretrained) / name)

    def pretrained_files(self, root: Path) -> None:
        """model.pretrained's files, checked to be regular files in the repo at `root`, else one line."""
        for name in (CONFIG, WEIGHTS, TOKENIZER) if self.pretrained else ():
            repo_file(root, "model.pretrained", self.pretrained_file(name))

    @model_validator(mode="after")
    def _arch_is_a_name(self) -> "ModelParams":
        if not (self.arch in BUILT_IN_MODELS or OWN_MODEL.fullmatch(self.arch)):
            raise ValueError(f"model.arch: {brief(self.arch)} must be a built-in model ({', '.join(BUILT_IN_MODELS)})"
                             " or a builder under src/models/ as models.<module>:<function>"
                             + did_you_mean(self.arch, BUILT_IN_MODELS))
        return self


MAX_KNOB = 1e3  # an lr or weight decay above it can only be a mistake (above 3.4e38 it overflows the optimizer)


class ChunkParams(Section):
    parent: str = Field(alias="from")
    epochs: int | None = Field(default=None, gt=0)  # a table's chunks count epochs
    steps: int | None = Field(default=None, gt=0)  # a text's chunks count optimizer steps
    lr: float | None = Field(default=None, gt=0, le=MAX_KNOB)
    batch_size: int | None = Field(default=None, gt=0)
    weight_decay: float | None = Field(default=None, ge=0, le=MAX_KNOB)
    nproc: int | None = Field(default=None, gt=0)
    cooldown: Literal["linear", "cosine"] | None = None  # from the lr at the chunk's start down to min_lr
    launcher: Literal["local", "slurm"] | None = None  # where it and the chunks continuing it run (SlurmParams)
    slurm: dict[str, Any] | None = None  # keys of train.slurm to override, for this chunk and those continuing it


class TrainParams(Section):
    optimizer: Literal["sgd", "adam", "adamw"]
    lr: float = Field(gt=0, le=MAX_KNOB)
    batch_size: int = Field(gt=0)
    weight_decay: float = Field(ge=0, le=MAX_KNOB)
    decay_params: DecayParams = "matrices"  # see recipe/model.py decay_groups
    betas: list[Annotated[float, Field(ge=0, lt=1)]] = Field(default=[0.9, 0.999], min_length=2, max_length=2)
    grad_clip: float | None = Field(default=None, gt=0)  # max norm of the gradient; None: no clipping
    grad_accum: int = Field(default=1, gt=0)  # micro-batches of batch_size per optimizer step
    dtype: Dtype = "float32"  # bfloat16: autocast forward passes (on CPU too)
    compile: bool = False  # torch.compile the model's training steps; its own bytes, so a change retrains every chunk
    eval_every: int | None = Field(default=None, gt=0)  # text only: steps between val losses (tables: every epoch)
    eval_batches: int = Field(default=20, gt=0)  # text only: seeded val batches per val loss
    nproc: int = Field(default=1, gt=0)  # processes per chunk; over 1 trains it with DDP (torchrun, or srun)
    device: Literal["auto", "cpu", "cuda"] = "auto"  # auto: CUDA where present
    threads: int | None = Field(default=None, gt=0)  # torch threads per process; None: see processes.set_threads
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
    def _runs_are_valid(self) -> "TrainParams":
        for name in self.chunks:
            self.run(name)
        return self

    def run(self, name: str) -> RunSettings:
        """How chunk `name` runs (runner/settings.py): here, or as a SLURM job of train.slurm with the overrides of
        the chunks down its lineage."""
        slurm = None
        if self.inherited(name, "launcher") == "slurm":
            merged = self.slurm.model_dump()
            for link in self.lineage(name):
                merged.update(self.chunks[link].slurm or {})
            try:
                slurm = SlurmParams.model_validate(merged)
            except ValidationError as error:
                errors = error.errors(include_url=False)
                raise ValueError(f"train.chunks.{name}.slurm: " + "; ".join(describe(e, SlurmParams)
                                                                            for e in errors[:3])) from None
            nproc = self.inherited(name, "nproc")
            if nproc % slurm.nodes:
                raise ValueError(f"train.slurm.nodes: chunk {name}'s {nproc} processes (nproc) do not split evenly"
                                 f" over {slurm.nodes} nodes")
        return RunSettings(threads=self.threads, snapshot_every_steps=self.snapshot_every_steps,
                           snapshot_every_seconds=self.snapshot_every_seconds, slurm=slurm)

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
            compile=self.compile,
            eval_every=self.eval_every, eval_batches=self.eval_batches,
            schedule=self.schedule,
            cooldown=chunk.cooldown,
        )


class Params(Section):
    seed: int = Field(ge=0, lt=2**32)
    synthetic: SyntheticParams = SYNTHETIC_DEFAULT
    data: DataParams
    model: ModelParams
    train: TrainParams

    @property
    def task(self) -> str:
        return self.model.task or ("language_model" if self.data.is_text else "regression")

    @property
    def data_with_tokenizer(self) -> DataParams:
        """The data section with model.pretrained's tokenizer.json as data.tokenizer, where it has one."""
        if not self.model.pretrained:
            return self.data
        return self.data.model_copy(update={"tokenizer": self.model.pretrained_file(TOKENIZER)})

    @model_validator(mode="after")
    def _data_fits_model_and_chunks(self) -> "Params":
        text, train = self.data.is_text, self.train
        if text != (self.task == "language_model"):
            raise ValueError(f"model.task: {self.task} does not fit data.source {brief(self.data.source)}: a .txt"
                             " text or a folder of them is for language_model, a table for regression or"
                             " classification")
        if text and not (isinstance(self.model.args.get("block_size"), int) and self.model.args["block_size"] > 0):
            raise ValueError("model.args.block_size: a language model needs the length of the token windows it"
                             " trains on, a positive integer")
        if text and train.eval_every is None:
            raise ValueError("train.eval_every: missing key (a text's chunks count steps; say every how many steps"
                             " the val loss is measured)")
        if self.model.pretrained and not text:
            raise ValueError(f"model.pretrained: a language model's; data.source {brief(self.data.source)} is a table")
        if self.model.pretrained and self.data.tokenizer is not None:
            raise ValueError("data.tokenizer: model.pretrained brings its own tokenizer.json; remove it")
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
    return validated(Params, raw, path)


def plan(params: Params) -> dict[str, Spec]:
    """Every stage's spec, by its file name under data/plan/."""
    model = params.model
    init = InitSpec(seed=params.seed, model=ModelSpec(task=params.task, arch=model.arch, args=model.args,
                                                      optimizer=params.train.optimizer,
                                                      decay_params=params.train.decay_params,
                                                      pretrained=model.pretrained))
    # A table measures its val loss on the whole val split after every epoch: eval_batches does not reach it.
    text_only = {} if params.data.is_text else {"eval_batches": None}
    chunks = {name: ChunkSpec(name=name, parent=chunk.parent, init=init,
                              settings=params.train.settings(name).model_copy(update=text_only),
                              nproc=params.train.inherited(name, "nproc"),
                              device=params.train.device)
              for name, chunk in params.train.chunks.items()}
    synthetic = params.data.source == SYNTHETIC_SOURCE
    return {
        "synthetic.json": SyntheticSpec(seed=params.seed if synthetic else None,
                                        synthetic=params.synthetic if synthetic else None),
        "data.json": DataSpec(seed=params.seed, task=params.task, data=params.data_with_tokenizer),
        "init.json": init,
        "evaluate.json": EvaluateSpec(init=init, chunks=chunks),
        **{f"train/{name}.json": spec for name, spec in chunks.items()},
        "run.json": RunPlan(chunks={name: params.train.run(name) for name in chunks}),
    }

