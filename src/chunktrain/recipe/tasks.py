"""What the task decides around the one training loop: the loss, the output width, the metrics, the target's units.

The loop trains on what splits.py reads: a regression target standardized, a classification target as class
indices. Every number a task reports (train and val loss, test metrics) is in the target's original units.
"""

import torch
from torch import nn
from torch.nn import functional as F

from chunktrain.recipe.splits import LANGUAGE_MODEL, is_text, vocab_size


class Regression:
    """MSE on the standardized target; reported as MSE and MAE in the target's units."""

    name = "regression"
    metrics = ("mse", "mae")  # the first is the loss the loop reports

    def __init__(self, scale: float = 1.0):
        self.scale = scale  # the target's std: standardized target -> original units

    def loss(self, output: torch.Tensor, y: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
        return F.mse_loss(output, y, reduction=reduction)

    def reported(self, loss: float) -> float:
        """A mean training loss in the target's original units."""
        return loss * self.scale ** 2

    def sums(self, output: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
        """Each metric summed over the rows of a batch, in the target's original units."""
        error = (output - y).double()
        return {"mse": error.square().sum().item() * self.scale ** 2, "mae": error.abs().sum().item() * self.scale}


class Classification:
    """Cross-entropy on one logit per class of the train split; reported as cross-entropy and accuracy."""

    name = "classification"
    metrics = ("cross_entropy", "accuracy")

    def __init__(self, labels: list):
        self.labels = labels

    def loss(self, output: torch.Tensor, y: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
        return F.cross_entropy(output, y, reduction=reduction)

    def reported(self, loss: float) -> float:
        return loss

    def sums(self, output: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
        return {"cross_entropy": F.cross_entropy(output.double(), y, reduction="sum").item(),
                "accuracy": (output.argmax(dim=1) == y).sum().item()}


class LanguageModel:
    """Cross-entropy of the next token at every position of a window; reported as it is."""

    name = LANGUAGE_MODEL
    metrics = ("cross_entropy",)

    def loss(self, output: torch.Tensor, y: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
        loss = F.cross_entropy(output.flatten(0, 1).float(), y.flatten(), reduction=reduction)
        return loss / y.shape[1] if reduction == "sum" else loss  # a sum is over windows, like a table's over rows

    def reported(self, loss: float) -> float:
        return loss


Task = Regression | Classification | LanguageModel


def output_width(transform: dict) -> int:
    """The model's outputs: one per class seen in the train split, one per token, or the one regression target."""
    if is_text(transform):
        return vocab_size(transform)
    return len(transform["labels"]) if transform["task"] == Classification.name else 1


def make_task(transform: dict) -> Task:
    """The task of a transform (and so of the checkpoint that carries it)."""
    if is_text(transform):
        return LanguageModel()
    if transform["task"] == Classification.name:
        return Classification(transform["labels"])
    return Regression(transform["target_std"])


@torch.no_grad()
def evaluate(model: nn.Module, split, task: Task, batch_size: int = 8192) -> dict[str, float]:
    """The task's metrics of the model on a Split, means in the target's original units; the first is the loss."""
    model.eval()
    totals = dict.fromkeys(task.metrics, 0.0)
    for start in range(0, len(split.y), batch_size):
        batch = task.sums(model(split.x[start:start + batch_size]), split.y[start:start + batch_size])
        for name, value in batch.items():
            totals[name] += value
    return {name: total / len(split.y) for name, total in totals.items()}
