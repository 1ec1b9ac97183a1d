"""Several processes training one chunk as one (DDP): which rows of each global batch a process takes, how the
loss is summed across processes, and a stop that every process agrees on. The processes are started and joined
into a group by the runner (runner/processes.py).

Every rank draws the same global batches (batches.py) and trains on its contiguous share of each, so the global
batch size stays train.batch_size. One process writes snapshots and the checkpoint (World.writes).
"""

import contextlib
import signal
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from chunktrain.recipe.errors import PipelineError
from chunktrain.recipe.loop import OneProcess
from chunktrain.recipe.specs import TrainSettings
from chunktrain.recipe.tasks import Task


@dataclass(frozen=True)
class World:
    """This process's place among the chunk's processes, and the device it trains on."""

    rank: int
    size: int
    device: torch.device
    writes: bool = True  # the one process that writes snapshots and the checkpoint: the stage's node's first
    threads: int = 1  # torch's intra-op threads in this process

    def barrier(self) -> None:
        if self.size > 1:
            dist.barrier()


def check_nproc(nproc: int, n_rows: int, settings: TrainSettings, key: str) -> None:
    """Every process needs at least one row of every micro-batch, in the last (smallest) global batch too."""
    rows = settings.batch_size * settings.grad_accum
    smallest = n_rows % rows or min(rows, n_rows)
    if nproc * settings.grad_accum > smallest:
        raise PipelineError(f"{key}: {nproc} processes x {settings.grad_accum} micro-batches is more than the"
                            f" {smallest} row(s) of the smallest global batch ({n_rows} training rows in steps of"
                            f" {rows}); every process needs at least one row of each micro-batch")


class DataParallel(OneProcess):
    """The Parallelism of DDP: this rank's share of each batch, the global loss sum, a stop all ranks agree on.

    A signal reaches each rank at its own moment, so `stop` changes only at the per-micro-batch all-reduce.
    """

    def __init__(self, world: World, stop_requested):
        super().__init__(stop_requested)
        self.world = world
        self.sync = torch.zeros(2, dtype=torch.float64, device=world.device)  # [loss sum, stop request]
        self.agreed: int | None = None

    @property
    def stop(self) -> int | None:
        return self.agreed

    def wrap(self, model: nn.Module) -> DistributedDataParallel:
        """The model under DDP, its gradients averaged across the ranks."""
        return DistributedDataParallel(model, device_ids=[self.world.device.index] if self.world.device.type == "cuda"
                                       else None)

    def share(self, rows: int) -> tuple[int, int]:
        rank, size = self.world.rank, self.world.size
        return rows * rank // size, rows * (rank + 1) // size

    def backward(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, rows: int, task: Task, autocast,
                 loss_sum: torch.Tensor) -> None:
        with autocast:
            micro_sum = task.loss(model(x), y, reduction="sum")
        with _peer_failure(self.world.rank):
            # DDP averages the ranks' gradients; scaling each sum by size / rows makes that the batch mean.
            (micro_sum * (self.world.size / rows)).backward()
            # One small all-reduce a micro-batch: the global loss (a snapshot holds it), and whether a rank was
            # signalled.
            self.sync[0], self.sync[1] = micro_sum.detach(), self.stop_requested() or 0
            dist.all_reduce(self.sync)
        if self.sync[1]:
            self.agreed = self.stop_requested() or signal.SIGTERM
        loss_sum += self.sync[0]


@contextlib.contextmanager
def _peer_failure(rank: int):
    """A collective that fails because another rank died becomes one line instead of a traceback."""
    try:
        yield
    except RuntimeError as error:
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        if not isinstance(error, dist.DistError) and "gloo" not in reason:
            raise  # not a collective's failure: a bug, keep its traceback
        raise PipelineError(f"rank {rank}: a collective operation failed, most likely because another rank died"
                            f" ({reason}); no checkpoint was written") from None
