"""Several processes for one chunk: the process group, and what the training loop does differently under DDP.

Every rank computes the same epoch_order and trains on its contiguous share of each global batch,
so the global batch size stays train.batch_size. Rank 0 alone writes snapshots and the checkpoint.
"""

import atexit
import contextlib
import os
import signal
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from chunktrain.errors import PipelineError
from chunktrain.tasks import Task
from chunktrain.training import OneProcess


STAGE_NODE = "CHUNKTRAIN_STAGE_NODE"  # set by launch() for its processes: the node whose stage waits for the output


@dataclass(frozen=True)
class World:
    """This process's place among the chunk's processes, and the device it trains on."""

    rank: int
    size: int
    device: torch.device
    writes: bool = True  # the one process that writes snapshots and the checkpoint: the stage's node's first

    def barrier(self) -> None:
        if self.size > 1:
            dist.barrier()


def under_torchrun() -> bool:
    """True in a process that torchrun (ours or the user's) started."""
    return "WORLD_SIZE" in os.environ and "LOCAL_RANK" in os.environ


def check_nproc(nproc: int, n_rows: int, batch_size: int, key: str) -> None:
    """Every process needs at least one row of every global batch, the last (smallest) one included."""
    smallest = n_rows % batch_size or min(batch_size, n_rows)
    if nproc > smallest:
        raise PipelineError(f"{key}: {nproc} processes is more than the {smallest} row(s) of the smallest global batch"
                            f" ({n_rows} training rows in batches of {batch_size}); every process needs at least one")


def resolve_device(setting: str, local_rank: int) -> torch.device:
    """train.device: `auto` is CUDA where present, else the CPU; each rank takes its own GPU."""
    if setting == "cuda" and not torch.cuda.is_available():
        raise PipelineError("train.device: 'cuda', but no CUDA device is available here (use 'auto' or 'cpu')")
    if setting == "cpu" or not torch.cuda.is_available():
        return torch.device("cpu")
    if local_rank >= torch.cuda.device_count():  # nccl cannot put two ranks on one GPU
        raise PipelineError(f"train.device: {setting!r} with {local_rank + 1}+ processes on this machine needs as many"
                            f" GPUs, but it has {torch.cuda.device_count()} (lower train.nproc or use 'cpu')")
    return torch.device("cuda", local_rank)


def join(nproc: int, device_setting: str, key: str) -> World:
    """This process's World; under torchrun, also join the process group (gloo on CPU, nccl on GPU)."""
    if not under_torchrun():
        return World(rank=0, size=1, device=resolve_device(device_setting, 0))
    size, local_rank = int(os.environ["WORLD_SIZE"]), int(os.environ["LOCAL_RANK"])
    if size != nproc:
        raise PipelineError(f"{key} is {nproc}, but torchrun started {size} processes; they must agree")
    device = resolve_device(device_setting, local_rank)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    atexit.register(dist.destroy_process_group)
    rank = dist.get_rank()
    # c10d numbers the nodes in its own order (host name, then pid), but the checkpoint must land on the node
    # whose stage waits for it: the writer is that node's first process (rank 0 when there is one node).
    first = torch.tensor([rank if os.environ.get(STAGE_NODE) and local_rank == 0 else size], device=device)
    dist.all_reduce(first, op=dist.ReduceOp.MIN)
    writer = int(first) if int(first) < size else 0  # under the user's own torchrun on one node: rank 0
    return World(rank=rank, size=size, device=device, writes=rank == writer)


class DataParallel(OneProcess):
    """The Parallelism of DDP: this rank's share of each batch, the global loss sum, a stop all ranks agree on.

    A signal reaches each rank at its own moment, so `stop` changes only at the per-step all-reduce.
    """

    def __init__(self, world: World, stop_requested: Callable[[], int | None]):
        super().__init__(stop_requested)
        self.world = world
        self.sync = torch.zeros(2, dtype=torch.float64, device=world.device)  # [loss sum, stop request]

    def wrap(self, model: nn.Module) -> DistributedDataParallel:
        """The model under DDP, its gradients averaged across the ranks."""
        return DistributedDataParallel(model, device_ids=[self.world.device.index] if self.world.device.type == "cuda"
                                       else None)

    def share(self, start: int, rows: int) -> tuple[int, int]:
        rank, size = self.world.rank, self.world.size
        return start + rows * rank // size, start + rows * (rank + 1) // size

    def backward(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, rows: int, task: Task) -> torch.Tensor:
        loss_sum = task.loss(model(x), y, reduction="sum")
        with _peer_failure(self.world.rank):
            # DDP averages the ranks' gradients; scaling each sum by size / rows makes that the batch mean.
            (loss_sum * (self.world.size / rows)).backward()
            # One small all-reduce a step: the global loss (a snapshot holds it) and whether a rank was signalled.
            self.sync[0], self.sync[1] = loss_sum.detach(), self.stop_requested() or 0
            dist.all_reduce(self.sync)
        if self.sync[1]:
            self.stop = self.stop_requested() or signal.SIGTERM
        return self.sync[0].clone()


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
