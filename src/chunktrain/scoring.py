"""Scoring a model on a split: what the val loss of every epoch and the evaluate stage report."""

import torch
from torch import nn

from chunktrain.data import Split
from chunktrain.tasks import Task


@torch.no_grad()
def evaluate(model: nn.Module, split: Split, task: Task, batch_size: int = 8192) -> dict[str, float]:
    """The task's metrics of the model on a split, means in the target's original units; the first is the loss."""
    model.eval()
    totals = dict.fromkeys(task.metrics, 0.0)
    for start in range(0, len(split.y), batch_size):
        batch = task.sums(model(split.x[start:start + batch_size]), split.y[start:start + batch_size])
        for name, value in batch.items():
            totals[name] += value
    return {name: total / len(split.y) for name, total in totals.items()}
