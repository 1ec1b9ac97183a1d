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
from collections.abc import Callable

import torch
from torch import nn

from chunktrain.core.config import OWN_MODEL, ModelSpec
from chunktrain.core.errors import PipelineError, brief
from chunktrain.core.gpt import gpt
from chunktrain.core.splits import is_text
from chunktrain.core.tasks import output_width


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
    try:
        found = getattr(importlib.import_module(module), function)
    except ImportError as error:
        file = f"src/{module.replace('.', '/')}.py"
        raise PipelineError(f"model.arch: cannot import {module} ({file}): {error}") from None
    except AttributeError:
        raise PipelineError(f"model.arch: src/{module.replace('.', '/')}.py has no function {function!r}") from None
    if not callable(found):
        raise PipelineError(f"model.arch: {arch} is not a function")
    return found


def model_config(spec: ModelSpec, transform: dict) -> dict:
    """What builds the model and optimizer on the data `transform` describes; stored in every checkpoint."""
    inputs = len(transform["vocab"]) if is_text(transform) else len(transform["features"])
    config = {"arch": spec.arch, "args": dict(spec.args), "task": spec.task, "inputs": inputs,
              "outputs": output_width(transform), "optimizer": spec.optimizer, "decay_params": spec.decay_params}
    try:
        inspect.signature(builder(spec.arch)).bind(inputs, config["outputs"], **config["args"])
    except TypeError as error:
        raise PipelineError(f"model.args: {brief(spec.args)} do not fit {spec.arch}: {error}") from None
    return config


def build_model(config: dict) -> nn.Module:
    """The configured module (see model_config)."""
    return builder(config["arch"])(config["inputs"], config["outputs"], **config["args"])


def build_optimizer(model: nn.Module, config: dict) -> torch.optim.Optimizer:
    """The configured optimizer: group 0 takes the weight decay, group 1 never does (see decay_groups)."""
    return OPTIMIZERS[config["optimizer"]](decay_groups(model, config["decay_params"]))


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
