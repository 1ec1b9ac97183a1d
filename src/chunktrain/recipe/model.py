"""The model (any nn.Module a builder makes from model.arch and model.args) and its optimizer.

A builder is a function `build(inputs, outputs, **args) -> nn.Module`:
- for a table, `inputs` is the number of features and the module maps a float32 batch (rows, inputs) of
  standardized features to (rows, outputs): the standardized regression target, or one logit per class;
- for a text, `inputs` and `outputs` are the vocabulary size and the module maps int64 token ids (batch, T)
  to logits (batch, T, outputs), T up to args["block_size"].
It must build the same module from the same arguments and draw its initial weights from torch's global
generator alone, so that the seed decides them. Everything it is called with is stored in the checkpoint's
model_config, which is how a checkpoint rebuilds its model. Your own builder lives in a module under
src/models/ and is named as model.arch: models.<module>:<function>.
"""

import importlib
import inspect
import itertools
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import psutil
import torch
from pydantic import BaseModel, ConfigDict, Field, StrictStr
from torch import nn

from chunktrain.recipe.checkpoint import MODEL_CONFIG, TRANSFORM, CheckpointError, best_round
from chunktrain.recipe.specs import OWN_MODEL, ModelSpec, Task, validated
from chunktrain.recipe.errors import PipelineError, brief
from chunktrain.recipe.gpt import gpt
from chunktrain.recipe.pretrained import pretrained_args
from chunktrain.recipe.splits import LANGUAGE_MODEL, check_transform, is_text, vocab_size
from chunktrain.recipe.tasks import output_width


def mlp(inputs: int, outputs: int, *, hidden: list[int]) -> nn.Sequential:
    """Linear layers of the given widths with ReLU between them; no hidden layers is a linear model."""
    if not all(type(width) is int and width > 0 for width in hidden):
        raise ValueError(f"hidden: {hidden} must be a list of layer widths, each a positive integer")
    widths = [inputs, *hidden, outputs]
    layers: list[nn.Module] = []
    for n_in, n_out in zip(widths, widths[1:]):
        layers += [nn.Linear(n_in, n_out), nn.ReLU()]
    return nn.Sequential(*layers[:-1])


ARCHITECTURES: dict[str, Callable[..., nn.Module]] = {"mlp": mlp, "gpt": gpt}  # config.BUILT_IN_MODELS names them
OPTIMIZERS = {"sgd": torch.optim.SGD, "adam": torch.optim.Adam, "adamw": torch.optim.AdamW}


def builder(arch: str) -> Callable[..., nn.Module]:
    """The function model.arch names: a built-in one, or models.<module>:<function> under src/models/."""
    if arch in ARCHITECTURES:
        return ARCHITECTURES[arch]
    if not OWN_MODEL.fullmatch(arch):
        raise PipelineError(f"model.arch: {brief(arch)} is neither a built-in architecture ({', '.join(ARCHITECTURES)})"
                            " nor models.<module>:<function>")
    module, function = arch.split(":")
    file = f"src/{module.replace('.', '/')}.py"
    try:
        found = getattr(importlib.import_module(module), function)
    except AttributeError:
        raise PipelineError(f"model.arch: {file} has no function {function!r}") from None
    except (Exception, SystemExit) as error:  # the user's module: a syntax error, a raise or an exit at import
        raise PipelineError(f"model.arch: cannot import {module} ({file}): {_said(error)}") from None
    if not callable(found):
        raise PipelineError(f"model.arch: {arch} is not a function")
    return found


def input_width(transform: dict) -> int:
    """The model's input width on the data `transform` describes: a text's vocabulary, a table's features."""
    return vocab_size(transform) if is_text(transform) else len(transform["features"])


def model_config(spec: ModelSpec, transform: dict) -> dict:
    """What builds the model and optimizer on the data `transform` describes; stored in every checkpoint."""
    config = {"arch": spec.arch, "args": dict(spec.args), "task": spec.task, "inputs": input_width(transform),
              "outputs": output_width(transform), "optimizer": spec.optimizer, "decay_params": spec.decay_params}
    if spec.pretrained:
        config["args"], vocab = pretrained_args(spec.pretrained, spec.args)
        if vocab != config["inputs"]:
            raise PipelineError(f"model.pretrained: {brief(spec.pretrained)} has {vocab:,} token embeddings, its"
                                f" tokenizer {config['inputs']:,} tokens; the weights do not fit")
    try:
        inspect.signature(builder(spec.arch)).bind(config["inputs"], config["outputs"], **config["args"])
    except TypeError as error:
        raise PipelineError(f"model.args: {brief(spec.args)} do not fit {spec.arch}: {error}") from None
    return config


class ModelConfig(BaseModel):
    """What of a checkpoint's model_config builds its model (model_config() makes it); checked where it is read."""

    model_config = ConfigDict(strict=True)

    arch: StrictStr
    args: dict[StrictStr, Any]
    task: Task
    inputs: Annotated[int, Field(gt=0)]
    outputs: Annotated[int, Field(gt=0)]


def check_model(config, transform) -> None:
    """A checkpoint's model_config and transform are what init could have written, and fit each other; else one
    line. What a builder does with its arguments shows only when build_model runs it."""
    check_transform(transform)
    spec = validated(ModelConfig, config, "model_config")
    widths = {"task": transform["task"], "inputs": input_width(transform), "outputs": output_width(transform)}
    for key, value in widths.items():
        if getattr(spec, key) != value:
            raise PipelineError(f"model_config.{key} is {brief(getattr(spec, key))}, but the transform's is {value}")
    try:
        inspect.signature(builder(spec.arch)).bind(spec.inputs, spec.outputs, **spec.args)
    except TypeError as error:
        raise PipelineError(f"model_config.args: {brief(spec.args)} do not fit {spec.arch}: {error}") from None


def build_model(config: dict) -> nn.Module:
    """The configured module (see model_config); one too large for this machine's free memory is refused first."""
    def build() -> nn.Module:
        """The builder's module; whatever else it raises or returns is one line naming it."""
        try:
            model = builder(config["arch"])(config["inputs"], config["outputs"], **config["args"])
        except PipelineError:
            raise
        except (Exception, SystemExit) as error:
            raise PipelineError(f"model.args: {config['arch']} cannot build from {brief(config['args'])}:"
                                f" {_said(error)}") from None
        if not isinstance(model, nn.Module):
            raise PipelineError(f"model.arch: {config['arch']} returned {type(model).__name__}, not an nn.Module")
        return model

    with torch.random.fork_rng(devices=[]), torch.device("meta"):  # sized without memory, the seed's draws untouched
        try:
            shape = build()
        except PipelineError:  # a builder the meta device cannot run: built for real alone
            shape = None
    if shape is not None:
        tensors = itertools.chain(shape.parameters(), shape.buffers())
        size, free = sum(t.numel() * t.element_size() for t in tensors), psutil.virtual_memory().available
        if size > free:
            args = ", ".join(f"{key}={brief(value)}" for key, value in config["args"].items())
            raise PipelineError(f"model.args ({args[:200]}) make a model of {size / 2**30:,.1f} GiB, more"
                                f" than the {free / 2**30:,.1f} GiB of memory free here; use a smaller model")
    return build()


def check_built(model: nn.Module, config: dict) -> None:
    """What init checks of a built model before anything trains: float32 parameters to train, and the output shape
    the task needs on a dummy batch (a table's (2, outputs), a text's (2, T, outputs)); else one line."""
    parameters = [p for p in model.parameters() if p.requires_grad]
    arch = f"model.arch: {config['arch']}"
    if not parameters:
        raise PipelineError(f"{arch} built a model with no trainable parameters")
    if dtypes := sorted({str(p.dtype).removeprefix("torch.") for p in parameters} - {"float32"}):
        raise PipelineError(f"{arch} built a model with {', '.join(dtypes)} parameters; the data and the loop are"
                            " float32 (drop the .double() or .half(); bf16 is train.precision's to set)")
    text = config["task"] == LANGUAGE_MODEL
    batch = (torch.zeros(2, min(4, config["args"].get("block_size", 4)), dtype=torch.long) if text
             else torch.zeros(2, config["inputs"]))
    expected = (*batch.shape, config["outputs"]) if text else (2, config["outputs"])
    with torch.random.fork_rng(devices=[]), torch.no_grad():  # the seed's draws untouched
        model.eval()
        try:
            output = model(batch)
        except Exception as error:
            raise PipelineError(f"{arch} fails on a batch of shape {tuple(batch.shape)}: {_said(error)}") from None
        finally:
            model.train()
    if not isinstance(output, torch.Tensor) or tuple(output.shape) != expected:
        what = f"shape {tuple(output.shape)}" if isinstance(output, torch.Tensor) else type(output).__name__
        raise PipelineError(f"{arch} maps a batch of shape {tuple(batch.shape)} to {what}; the task"
                            f" {config['task']} needs {expected} (see recipe/model.py: a builder's contract)")


def _said(error: BaseException) -> str:
    """An exception as one short line: its type and first words."""
    return f"{type(error).__name__}: {' '.join(str(error).split())[:200]}".removesuffix(": ")


def load_trained(checkpoint: dict, path: str | Path, stage: str = "") -> nn.Module:
    """The model of a loaded checkpoint with its best round's weights (init's own), in eval mode: what predict,
    sample and evaluate use.

    A forged or damaged model_config, transform or state dict is one line naming the file, never a traceback.
    """
    try:
        check_model(checkpoint[MODEL_CONFIG], checkpoint[TRANSFORM])
        model = build_model(checkpoint[MODEL_CONFIG])
        model.load_state_dict(best_round(checkpoint)[1])
    except PipelineError as error:
        raise CheckpointError(path, f"holds no usable model ({error})", stage) from None
    except (AttributeError, TypeError, ValueError, RuntimeError) as error:  # a builder's or load_state_dict's
        reason = " ".join(str(error).split())[:200] or type(error).__name__
        raise CheckpointError(path, f"holds no usable model ({reason})", stage) from None
    return model.eval()


FUSED_DEVICES = ("cpu", "cuda")  # where torch has fused kernels for SGD, Adam and AdamW


def build_optimizer(model: nn.Module, config: dict) -> torch.optim.Optimizer:
    """The configured optimizer: group 0 takes the weight decay, group 1 never does (see decay_groups).

    Fused: one kernel updates every tensor of a group, where torch's default on a CPU is a loop of small ops per
    tensor (a fourth of the time for AdamW on the GPT recipe: benchmarks/README.md). The optimizer state records it
    (param_groups' `fused`), so a chunk continues its parent's optimizer as it was saved."""
    fused = all(parameter.device.type in FUSED_DEVICES for parameter in model.parameters()) or None
    return OPTIMIZERS[config["optimizer"]](decay_groups(model, config["decay_params"]), fused=fused)


def decay_groups(model: nn.Module, decay_params: str) -> list[dict]:
    """Parameters that weight decay applies to, then those it does not. `matrices` decays the weights of two or
    more dimensions except embeddings (nn.Embedding's), `matrices_and_embeddings` those too (nanoGPT's choice),
    `all` every parameter; biases and norms are decayed by `all` alone."""
    embeddings = {id(module.weight) for module in model.modules() if isinstance(module, nn.Embedding)}
    decayed, kept = [], []
    for parameter in model.parameters():
        matrix = parameter.dim() >= 2 and (decay_params != "matrices" or id(parameter) not in embeddings)
        (decayed if decay_params == "all" or matrix else kept).append(parameter)
    return [{"params": decayed}, {"params": kept, "weight_decay": 0.0}]


def apply_settings(optimizer: torch.optim.Optimizer, lr: float, weight_decay: float,
                   betas: tuple[float, float]) -> None:
    """Set a chunk's knobs on a restored optimizer, leaving its moment estimates untouched."""
    for index, group in enumerate(optimizer.param_groups):
        group["lr"] = lr
        group["weight_decay"] = weight_decay if index == 0 else 0.0
        if "betas" in group:
            group["betas"] = tuple(betas)
