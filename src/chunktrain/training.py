"""The training loop: tensors in, state and per-epoch history out; no file I/O."""

import math
from collections.abc import Callable

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from chunktrain.data import Split
from chunktrain.errors import PipelineError


def epoch_order(n: int, seed: int, epoch: int) -> torch.Tensor:
    """The shuffle of global epoch `epoch`, a function of (seed, epoch) alone.

    Chunk boundaries therefore cannot change the data order: 3 + 2 epochs see what 5 epochs see.
    """
    # torch's CPU generator keeps only 32 bits of a seed; SeedSequence mixes both numbers into them.
    generator = torch.Generator().manual_seed(int(np.random.SeedSequence([seed, epoch]).generate_state(1)[0]))
    return torch.randperm(n, generator=generator)


def train_epochs(model: nn.Module, optimizer: torch.optim.Optimizer, train: Split, val: Split, *,
                 first_epoch: int, epochs: int, batch_size: int, seed: int,
                 on_batch: Callable[[int], None] | None = None,
                 on_epoch: Callable[[dict], None] | None = None) -> list[dict]:
    """Train global epochs first_epoch .. first_epoch + epochs - 1; return one record per epoch."""
    n = len(train.y)
    history = []
    for epoch in range(first_epoch, first_epoch + epochs):
        order = epoch_order(n, seed, epoch)
        x, y = train.x[order], train.y[order]  # one gather per epoch; batches are then views
        model.train()
        loss_sum = torch.zeros((), dtype=torch.float64)
        for start in range(0, n, batch_size):
            xb, yb = x[start:start + batch_size], y[start:start + batch_size]
            optimizer.zero_grad(set_to_none=True)
            loss = F.mse_loss(model(xb), yb)
            loss.backward()
            optimizer.step()
            loss_sum += loss.detach() * len(yb)
            if on_batch:
                on_batch(len(yb))
        train_loss = loss_sum.item() / n
        if not math.isfinite(train_loss):
            raise PipelineError(f"training loss is {train_loss} in epoch {epoch}: the run diverged"
                                " (try a lower lr); no checkpoint was written")
        record = {"epoch": epoch, "train_loss": train_loss, "val_loss": evaluate(model, val)["mse"],
                  "lr": optimizer.param_groups[0]["lr"]}
        history.append(record)
        if on_epoch:
            on_epoch(record)
    return history


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
