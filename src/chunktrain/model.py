"""The model (an architecture from architectures.py, by name) and its optimizer."""

import torch
from torch import nn

from chunktrain.architectures import ARCHITECTURES
from chunktrain.errors import PipelineError
from chunktrain.params import Params
from chunktrain.tasks import output_width

OPTIMIZERS = {"sgd": torch.optim.SGD, "adam": torch.optim.Adam, "adamw": torch.optim.AdamW}


def model_config(n_features: int, hidden: list[int], optimizer: str, *, arch: str = "mlp", task: str = "regression",
                 n_outputs: int = 1) -> dict:
    """What builds the model and optimizer; stored in every checkpoint so a resume (or a user) rebuilds the same.

    The model is ARCHITECTURES[arch](n_features, n_outputs, hidden); for task classification its outputs are
    one logit per class of the checkpoint's labels, for regression the standardized target.
    """
    if arch not in ARCHITECTURES:
        raise PipelineError(f"model.arch: {arch!r} is not an architecture in src/chunktrain/architectures.py"
                            f" (there: {', '.join(ARCHITECTURES)})")
    return {"arch": arch, "task": task, "n_features": n_features, "n_outputs": n_outputs, "hidden": list(hidden),
            "optimizer": optimizer}


def params_config(params: Params, n_features: int, transform: dict) -> dict:
    """The model_config params.yaml asks for, on data of `n_features` columns that `transform` describes."""
    return model_config(n_features, params.model.hidden, params.train.optimizer, arch=params.model.arch,
                        task=params.model.task, n_outputs=output_width(transform))


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
