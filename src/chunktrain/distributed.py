"""Several processes for one chunk: the torchrun launch, the process group, and the DDP training loop.

Every rank computes the same epoch_order and trains on its contiguous share of each global batch,
so the global batch size stays train.batch_size. Rank 0 alone writes snapshots and the checkpoint.
"""

import atexit
import contextlib
import os
import re
import signal
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn
from torch.nn import functional as F
from torch.nn.parallel import DistributedDataParallel

from chunktrain.data import Split
from chunktrain.errors import PipelineError
from chunktrain.resume import Interrupted, StopSignals
from chunktrain.training import Position, epoch_order, finish_epoch

INTERRUPTED = {128 + signal.SIGINT, 128 + signal.SIGTERM}  # exit codes of a rank stopped by a signal
STAGE_NODE = "CHUNKTRAIN_STAGE_NODE"  # set by launch() for its processes: the node whose stage waits for the output


@dataclass(frozen=True)
class World:
    """This process's place among the chunk's processes, and the device it trains on.

    rank 0 writes the snapshots and the checkpoint: on several nodes, the first process of the stage's node.
    """

    rank: int
    size: int
    device: torch.device

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


def launch(nproc: int, script: Path, argv: list[str], *, device: str, name: str, out: Path) -> None:
    """Run `script argv` as `nproc` processes through torchrun's own code; any failure is one PipelineError.

    With torchrun's own variables PET_NNODES=N and PET_RDZV_ENDPOINT=host:port, this node runs nproc / N of the
    processes and waits (c10d rendezvous, PET_RDZV_CONF=join_timeout=<s>, default 600) for the other nodes.
    """
    nnodes = node_count(nproc, name)
    per_node = nproc // nnodes
    resolve_device(device, per_node - 1)  # refuse a missing GPU here, not once in every rank
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.elastic.rendezvous.api import RendezvousTimeoutError
    from torch.distributed.run import parse_args, run

    # Split the cores between the ranks; torchrun alone would give each one thread.
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // per_node)))
    os.environ[STAGE_NODE] = "1"  # see join(): this node's first process writes the checkpoint
    rendezvous = ["--standalone"] if nnodes == 1 else ["--rdzv-backend=c10d", f"--nnodes={nnodes}"]
    try:
        run(parse_args([*rendezvous, f"--nproc-per-node={per_node}", "--max-restarts=0", str(script), *argv]))
    except RendezvousTimeoutError:
        out.unlink(missing_ok=True)
        timeout = re.search(r"join_timeout=(\d+)", os.environ.get("PET_RDZV_CONF", ""))
        raise PipelineError(f"{name}: {nnodes - 1} other node(s) did not join the rendezvous at"
                            f" {os.environ['PET_RDZV_ENDPOINT']} within {timeout[1] if timeout else 600} s"
                            f" (PET_RDZV_CONF=join_timeout=<s>); the chunk wrote no checkpoint") from None
    except ChildFailedError as error:
        out.unlink(missing_ok=True)  # a rank may have died after rank 0 wrote it: a failed stage leaves none
        rank, failure = error.get_first_failure()
        if failure.exitcode in INTERRUPTED:
            raise Interrupted(f"{name} stopped by a signal; `dvc repro` resumes from rank 0's snapshot",
                              failure.exitcode - 128) from None
        how = (f"was killed by {failure.signal_name()}" if failure.exitcode < 0
               else f"exited with status {failure.exitcode}")
        raise PipelineError(f"{name}: rank {rank} of {nproc} {how}; the chunk failed and wrote no checkpoint") from None
    except SignalException as error:
        out.unlink(missing_ok=True)
        raise Interrupted(f"{name} stopped by {error.sigval.name}; `dvc repro` resumes from rank 0's snapshot",
                          error.sigval) from None


def node_count(nproc: int, name: str) -> int:
    """PET_NNODES, torchrun's own variable: how many nodes share the chunk's nproc processes (1 when unset)."""
    value = os.environ.get("PET_NNODES", "1")
    if not value.isdigit() or int(value) < 1:
        raise PipelineError(f"PET_NNODES={value!r}: give the number of nodes, e.g. PET_NNODES=2")
    nnodes = int(value)
    if nproc % nnodes:
        raise PipelineError(f"{name}: {nproc} processes do not split evenly over PET_NNODES={nnodes} nodes")
    if nnodes > 1 and not os.environ.get("PET_RDZV_ENDPOINT"):
        raise PipelineError(f"PET_NNODES={nnodes} needs PET_RDZV_ENDPOINT=<host>:<port>, where every node meets")
    return nnodes


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
    if int(os.environ.get("GROUP_WORLD_SIZE", "1")) > 1:
        # c10d numbers the nodes in its own order (host name, then pid), but the checkpoint must land on the node
        # whose stage waits for it: count the ranks from that node's first process, the one that writes.
        first = torch.tensor([rank if os.environ.get(STAGE_NODE) and local_rank == 0 else size], device=device)
        dist.all_reduce(first, op=dist.ReduceOp.MIN)
        rank = (rank - int(first)) % size
    return World(rank=rank, size=size, device=device)


class AgreedStop:
    """What the ranks agreed on at the last step: stop only when all of them stop, at the same step.

    A signal reaches each rank at its own moment, so `received` changes only at the per-step all-reduce.
    """

    def __init__(self, signals: StopSignals):
        self.signals = signals
        self.received: int | None = None


def wrap(model: nn.Module, world: World) -> DistributedDataParallel:
    """The model under DDP, its gradients averaged across the ranks."""
    return DistributedDataParallel(model, device_ids=[world.device.index] if world.device.type == "cuda" else None)


def train_epochs(model: DistributedDataParallel, optimizer: torch.optim.Optimizer, train: Split, val: Split,
                 position: Position, *, last_epoch: int, batch_size: int, seed: int, stop: AgreedStop,
                 on_step: Callable[[Position, int], None], on_epoch: Callable[[dict], None]) -> list[dict]:
    """training.train_epochs on this rank's share of every global batch; position.loss_sum is the global sum."""
    rank, size = dist.get_rank(), dist.get_world_size()
    n = len(train.y)
    sync = torch.zeros(2, dtype=torch.float64, device=train.y.device)  # [squared error sum, stop signal]
    while position.epoch <= last_epoch:
        order = epoch_order(n, seed, position.epoch).to(train.y.device)
        x, y = train.x[order], train.y[order]
        model.train()
        for start in range(position.batch * batch_size, n, batch_size):
            rows = min(batch_size, n - start)
            lo, hi = start + rows * rank // size, start + rows * (rank + 1) // size
            optimizer.zero_grad(set_to_none=True)
            squared = F.mse_loss(model(x[lo:hi]), y[lo:hi], reduction="sum")
            with _peer_failure(rank):
                # DDP averages the ranks' gradients; scaling each sum by size / rows makes that the batch mean.
                (squared * (size / rows)).backward()
                # One small all-reduce a step: the global loss (a snapshot holds it) and whether a rank was signalled.
                sync[0], sync[1] = squared.detach(), stop.signals.received or 0
                dist.all_reduce(sync)
            optimizer.step()
            position.loss_sum += sync[0]
            if sync[1]:
                stop.received = stop.signals.received or signal.SIGTERM
            position.batch += 1
            on_step(position, hi - lo)
        # Every rank holds the same weights, so each computes the same val loss; no rank waits for another.
        on_epoch(finish_epoch(model.module, optimizer, val, position, n))
    return position.history


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
