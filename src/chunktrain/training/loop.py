"""The training loop, for one process or many: tensors in, state and per-epoch history out; no file I/O.

What differs between one process and several (which rows of a batch this process takes, how the
batch's loss is reduced across processes, how a stop request is agreed) is a Parallelism passed in.
"""

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from chunktrain.core.errors import PipelineError
from chunktrain.core.splits import Split
from chunktrain.core.tasks import Regression, Task, evaluate
from chunktrain.training import schedule


def epoch_order(n: int, seed: int, epoch: int) -> torch.Tensor:
    """The shuffle of global epoch `epoch`, a function of (seed, epoch) alone.

    Chunk boundaries therefore cannot change the data order: 3 + 2 epochs see what 5 epochs see.
    """
    # torch's CPU generator keeps only 32 bits of a seed; SeedSequence mixes both numbers into them.
    generator = torch.Generator().manual_seed(int(np.random.SeedSequence([seed, epoch]).generate_state(1)[0]))
    return torch.randperm(n, generator=generator)


@dataclass
class Position:
    """Where a chunk stands. A snapshot stores it, so a resumed chunk continues bit for bit."""

    epoch: int  # the global epoch in progress, or the next to start
    batch: int = 0  # batches of that epoch already trained
    # sum of batch loss x batch size over those batches, in float64 as the epoch's mean needs
    loss_sum: torch.Tensor = field(default_factory=lambda: torch.zeros((), dtype=torch.float64))
    history: list[dict] = field(default_factory=list)  # one record per epoch this chunk completed


class OneProcess:
    """The Parallelism of a single process: the whole batch, its mean loss, a stop as soon as it is asked."""

    def __init__(self, stop_requested: Callable[[], int | None] = lambda: None):
        self.stop_requested = stop_requested
        self.stop: int | None = None  # the signal to stop on, once there is one

    def wrap(self, model: nn.Module) -> nn.Module:
        return model

    def share(self, start: int, rows: int) -> tuple[int, int]:
        """The rows [lo, hi) of the global batch [start, start + rows) that this process trains on."""
        return start, start + rows

    def backward(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, rows: int, task: Task) -> torch.Tensor:
        """Backpropagate the batch's mean loss; return the global batch's loss sum."""
        loss = task.loss(model(x), y)
        loss.backward()
        self.stop = self.stop_requested()
        return loss.detach() * rows


def train_epochs(model: nn.Module, optimizer: torch.optim.Optimizer, train: Split, val: Split,
                 position: Position, *, last_epoch: int, batch_size: int, seed: int,
                 task: Task | None = None, parallel: OneProcess | None = None,
                 lr: Callable[[float, float], float] | None = None,
                 on_step: Callable[[Position, int], None] | None = None,
                 on_epoch: Callable[[dict], None] | None = None) -> list[dict]:
    """Train from `position` through global epoch `last_epoch`, advancing `position`; return its history.

    lr(t0, t1), if given, sets the lr of the step from global position t0 to t1 (see schedule.py).
    on_step(position, rows) runs after every optimizer step, on_epoch(record) after every epoch.
    `task` gives the loss and the units losses are reported in (default: regression, reported as trained).
    """
    task = task or Regression()
    parallel = parallel or OneProcess()
    trained = parallel.wrap(model)
    n = len(train.y)
    steps_per_epoch = math.ceil(n / batch_size)
    while position.epoch <= last_epoch:
        order = epoch_order(n, seed, position.epoch).to(train.y.device)
        x, y = train.x[order], train.y[order]  # one gather per epoch; batches are then views
        trained.train()
        for start in range(position.batch * batch_size, n, batch_size):
            rows = min(batch_size, n - start)
            lo, hi = parallel.share(start, rows)
            if lr:
                set_lr(optimizer, lr(*schedule.step_span(position.epoch, position.batch, steps_per_epoch)))
            optimizer.zero_grad(set_to_none=True)
            batch_loss_sum = parallel.backward(trained, x[lo:hi], y[lo:hi], rows, task)
            optimizer.step()
            position.loss_sum += batch_loss_sum
            position.batch += 1
            if on_step:
                on_step(position, hi - lo)
        # Every process holds the same weights, so each computes the same val loss; none waits for another.
        record = finish_epoch(model, optimizer, val, position, n, task)
        if on_epoch:
            on_epoch(record)
    return position.history


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr


def finish_epoch(model: nn.Module, optimizer: torch.optim.Optimizer, val: Split, position: Position,
                 n: int, task: Task) -> dict:
    """Close the epoch in progress: its mean training loss over `n` rows, its val loss; move to the next.

    Both are in the target's original units (a regression trains on the standardized target).
    """
    train_loss = task.reported(position.loss_sum.item() / n)
    if not math.isfinite(train_loss):
        raise PipelineError(f"training loss is {train_loss} in epoch {position.epoch}: the run diverged"
                            " (try a lower lr); no checkpoint was written")
    val_loss = evaluate(model, val, task)[task.metrics[0]]
    record = {"epoch": position.epoch, "train_loss": train_loss, "val_loss": val_loss,
              "lr": optimizer.param_groups[0]["lr"]}
    position.history.append(record)
    position.epoch, position.batch, position.loss_sum = position.epoch + 1, 0, torch.zeros_like(position.loss_sum)
    return record
