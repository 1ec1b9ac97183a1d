"""The model (an MLP; no hidden layers is plain linear regression) and its optimizer."""

import torch
from torch import nn

OPTIMIZERS = {"sgd": torch.optim.SGD, "adam": torch.optim.Adam, "adamw": torch.optim.AdamW}


def model_config(n_features: int, hidden: list[int], optimizer: str) -> dict:
    """What builds the model and optimizer; stored in every checkpoint so a resume rebuilds the same."""
    return {"n_features": n_features, "hidden": list(hidden), "optimizer": optimizer}


def build_model(config: dict) -> nn.Sequential:
    """Linear layers of the configured widths with ReLU between them, ending in one output."""
    widths = [config["n_features"], *config["hidden"], 1]
    layers: list[nn.Module] = []
    for n_in, n_out in zip(widths, widths[1:]):
        layers += [nn.Linear(n_in, n_out), nn.ReLU()]
    return nn.Sequential(*layers[:-1])


def build_optimizer(model: nn.Module, config: dict) -> torch.optim.Optimizer:
    """The configured optimizer with its class defaults; each chunk sets its own lr and weight decay."""
    return OPTIMIZERS[config["optimizer"]](model.parameters())


def apply_settings(optimizer: torch.optim.Optimizer, lr: float, weight_decay: float) -> None:
    """Set a chunk's knobs on a restored optimizer, leaving its moment estimates untouched."""
    for group in optimizer.param_groups:
        group["lr"] = lr
        group["weight_decay"] = weight_decay
