"""The training loop, for one process or many, on a table or a text: batches in, state and history out; no file I/O.

Training goes in rounds, each ended by a val loss: a table's round is an epoch, a text's is train.eval_every
optimizer steps. What differs between data kinds (which batches a round has, how the val loss is measured) is
a Batches object (batches.py); what differs between one process and several (which rows of a batch this
process takes, how the loss is reduced across processes, how a stop request is agreed) is a Parallelism.
"""

import contextlib
import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn

from chunktrain.recipe.checkpoint import EPOCH, MODEL_STATE
from chunktrain.recipe.specs import TrainSettings
from chunktrain.recipe.errors import PipelineError
from chunktrain.recipe.tasks import Task
from chunktrain.recipe import schedule
from chunktrain.recipe.batches import Batches


@dataclass
class Position:
    """Where a chunk stands. A snapshot stores it, so a resumed chunk continues bit for bit."""

    epoch: int  # the global round (a table's epoch) in progress, or the next to start
    step: int  # optimizer steps done in total, across all chunks
    batch: int = 0  # steps of that round already done
    # sum of batch loss x batch size over those batches, in float64 as the epoch's mean needs
    loss_sum: torch.Tensor = field(default_factory=lambda: torch.zeros((), dtype=torch.float64))
    history: list[dict] = field(default_factory=list)  # one record per round this chunk completed
    # The completed round of this chunk with the lowest val loss, the checkpoint's BEST: {EPOCH: the round,
    # MODEL_STATE: a copy of its weights on the CPU}; None until the chunk's first round ends.
    best: dict | None = None


class OneProcess:
    """The Parallelism of a single process: the whole batch, its mean loss, a stop as soon as it is asked."""

    def __init__(self, stop_requested: Callable[[], int | None] = lambda: None):
        self.stop_requested = stop_requested

    @property
    def stop(self) -> int | None:
        """The signal to stop on, once one was asked for (every process agrees on it at the same step)."""
        return self.stop_requested()

    def wrap(self, model: nn.Module) -> nn.Module:
        return model

    def share(self, rows: int) -> tuple[int, int]:
        """The rows [lo, hi) of a global batch of `rows` rows that this process trains on."""
        return 0, rows

    def backward(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, rows: int, task: Task, autocast,
                 loss_sum: torch.Tensor) -> None:
        """Backpropagate the micro-batch's share of the step's mean loss over `rows`; add its loss sum to
        `loss_sum`."""
        with autocast:
            loss = task.loss(model(x), y)
        micro_rows = y.shape[0]  # len() of a tensor costs a Python call more, on every step
        (loss if micro_rows == rows else loss * (micro_rows / rows)).backward()
        loss_sum.add_(loss.detach(), alpha=micro_rows)


def train_rounds(model: nn.Module, optimizer: torch.optim.Optimizer, batches: Batches, position: Position, *,
                 last_round: int, settings: TrainSettings, task: Task, parallel: OneProcess | None = None,
                 lr: Callable[[float, float], float] | None = None,
                 on_step: Callable[[Position, int], None] | None = None,
                 on_round: Callable[[dict], None] | None = None) -> list[dict]:
    """Train from `position` through global round `last_round`, advancing `position`; return its history.

    lr(t0, t1), if given, sets the lr of the step from global position t0 to t1, in rounds (see schedule.py).
    on_step(position, samples) runs after every optimizer step, on_round(record) after every round.
    """
    parallel = parallel or OneProcess()
    trained = parallel.wrap(model)
    if settings.compile:  # the training steps alone: the val loss and every checkpoint use `model`, its own keys
        trained = torch.compile(trained)
    autocast = (torch.autocast(batches.device.type, dtype=torch.bfloat16) if settings.dtype == "bfloat16"
                else contextlib.nullcontext())
    while position.epoch <= last_round:
        trained.train()
        for x, y in batches.round(position.epoch, position.batch):
            if lr:
                set_lr(optimizer, lr(*schedule.step_span(position.epoch, position.batch, batches.steps)))
            train_step(trained, optimizer, x, y, settings, task, parallel, autocast, position.loss_sum)
            position.batch += 1
            position.step += 1
            if on_step:
                on_step(position, y.shape[0])
        # Every process holds the same weights, so each computes the same val loss; none waits for another.
        model.eval()
        with torch.no_grad(), autocast:
            val_loss = batches.val_loss(model, task)
        # The lr of the round's last step, from the schedule: a round resumed after that step took none itself.
        last_lr = lr(*schedule.step_span(position.epoch, batches.steps - 1, batches.steps)) if lr else None
        record = finish_round(optimizer, position, batches.samples, val_loss, task, last_lr)
        keep_best(model, position, record)
        if on_round:
            on_round(record)
    return position.history


def train_step(model: nn.Module, optimizer: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor,
               settings: TrainSettings, task: Task, parallel: OneProcess, autocast, loss_sum: torch.Tensor) -> None:
    """One optimizer step on the global batch (x, y): this process's share, in grad_accum micro-batches; the
    step's loss sum is added to `loss_sum`."""
    rows = y.shape[0]
    lo, hi = parallel.share(rows)
    if hi - lo < rows:  # one of several processes; a slice of the whole batch would cost two views a step
        x, y = x[lo:hi], y[lo:hi]
    optimizer.zero_grad(set_to_none=True)
    if settings.grad_accum == 1:
        parallel.backward(model, x, y, rows, task, autocast, loss_sum)
    else:
        for micro_x, micro_y in zip(x.tensor_split(settings.grad_accum), y.tensor_split(settings.grad_accum)):
            if len(micro_y):
                parallel.backward(model, micro_x, micro_y, rows, task, autocast, loss_sum)
    if settings.grad_clip is not None:
        nn.utils.clip_grad_norm_(model.parameters(), settings.grad_clip)
    optimizer.step()


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr


def keep_best(model: nn.Module, position: Position, record: dict) -> None:
    """Copy the weights if the round of `record`, just finished, has the chunk's lowest val loss so far (an earlier
    round keeps a tie). The copy is read alone, never trained: the state the next round continues from is untouched."""
    if position.best is not None:
        best = next(kept for kept in position.history if kept["epoch"] == position.best[EPOCH])
        if not record["val_loss"] < best["val_loss"]:
            return
    weights = model.state_dict()
    copy = type(weights)((name, tensor.to("cpu", copy=True)) for name, tensor in weights.items())
    copy._metadata = weights._metadata  # the modules' versions, which load_state_dict passes back to them
    position.best = {EPOCH: record["epoch"], MODEL_STATE: copy}


def finish_round(optimizer: torch.optim.Optimizer, position: Position, samples: int, val_loss: float,
                 task: Task, lr: float | None = None) -> dict:
    """Close the round in progress: its mean training loss over `samples`, its val loss; move to the next.

    Both are in the target's original units (a regression trains on the standardized target).
    """
    train_loss = task.reported(position.loss_sum.item() / samples)
    if not math.isfinite(train_loss):
        raise PipelineError(f"training loss is {train_loss} at step {position.step}: the run diverged"
                            " (try a lower lr); no checkpoint was written")
    record = {"epoch": position.epoch, "step": position.step, "train_loss": train_loss, "val_loss": val_loss,
              "lr": optimizer.param_groups[0]["lr"] if lr is None else lr}
    position.history.append(record)
    position.epoch, position.batch, position.loss_sum = position.epoch + 1, 0, torch.zeros_like(position.loss_sum)
    return record
