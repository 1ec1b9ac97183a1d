"""The model (an architecture by the name model.arch gives) and its optimizer.

An architecture is a function (n_features, n_outputs, hidden) -> nn.Module that maps a float32 batch
(rows, n_features) of standardized features to (rows, n_outputs): the regression target (standardized),
or one logit per class. It must build the same module from the same arguments and draw its initial weights
from torch's global generator alone, so that the seed decides them. Everything it is called with is stored
in the checkpoint's model_config, which is how a checkpoint rebuilds its model.
"""

from collections.abc import Callable

import torch
from torch import nn

from chunktrain.core.config import ModelSpec
from chunktrain.core.errors import PipelineError
from chunktrain.core.tasks import output_width


def mlp(n_features: int, n_outputs: int, hidden: list[int]) -> nn.Sequential:
    """Linear layers of the given widths with ReLU between them; no hidden layers is a linear model."""
    widths = [n_features, *hidden, n_outputs]
    layers: list[nn.Module] = []
    for n_in, n_out in zip(widths, widths[1:]):
        layers += [nn.Linear(n_in, n_out), nn.ReLU()]
    return nn.Sequential(*layers[:-1])


ARCHITECTURES: dict[str, Callable[..., nn.Module]] = {
    "mlp": mlp,
}
OPTIMIZERS = {"sgd": torch.optim.SGD, "adam": torch.optim.Adam, "adamw": torch.optim.AdamW}


def model_config(n_features: int, hidden: list[int], optimizer: str, *, arch: str = "mlp", task: str = "regression",
                 n_outputs: int = 1) -> dict:
    """What builds the model and optimizer; stored in every checkpoint so a resume (or a user) rebuilds the same.

    The model is ARCHITECTURES[arch](n_features, n_outputs, hidden); for task classification its outputs are
    one logit per class of the checkpoint's labels, for regression the standardized target.
    """
    if arch not in ARCHITECTURES:
        raise PipelineError(f"model.arch: {arch!r} is not an architecture in src/chunktrain/core/model.py"
                            f" (there: {', '.join(ARCHITECTURES)})")
    return {"arch": arch, "task": task, "n_features": n_features, "n_outputs": n_outputs, "hidden": list(hidden),
            "optimizer": optimizer}


def spec_config(spec: ModelSpec, transform: dict) -> dict:
    """The model_config a spec asks for, on the data `transform` describes."""
    return model_config(len(transform["features"]), spec.hidden, spec.optimizer, arch=spec.arch, task=spec.task,
                        n_outputs=output_width(transform))


def build_model(config: dict) -> nn.Module:
    """The configured architecture with its outputs (see model_config)."""
    return ARCHITECTURES[config["arch"]](config["n_features"], config["n_outputs"], list(config["hidden"]))


def build_optimizer(model: nn.Module, config: dict) -> torch.optim.Optimizer:
    """The configured optimizer with its class defaults; each chunk sets its own lr and weight decay."""
    return OPTIMIZERS[config["optimizer"]](model.parameters())


def apply_settings(optimizer: torch.optim.Optimizer, lr: float, weight_decay: float) -> None:
    """Set a chunk's knobs on a restored optimizer, leaving its moment estimates untouched."""
    for group in optimizer.param_groups:
        group["lr"] = lr
        group["weight_decay"] = weight_decay
