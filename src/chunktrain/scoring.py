"""Scoring a model on a split: what the val loss of every epoch and the evaluate stage report."""

import torch
from torch import nn

from chunktrain.data import Split


@torch.no_grad()
def evaluate(model: nn.Module, split: Split, batch_size: int = 8192) -> dict[str, float]:
    """Mean squared and mean absolute error of the model on a split."""
    model.eval()
    squared = absolute = 0.0
    for start in range(0, len(split.y), batch_size):
        error = model(split.x[start:start + batch_size]) - split.y[start:start + batch_size]
        squared += error.double().square().sum().item()
        absolute += error.double().abs().sum().item()
    return {"mse": squared / len(split.y), "mae": absolute / len(split.y)}
