"""The chunk's processes: the device and threads of each, the process group they join, and torchrun started
here for a chunk of several (what DDP changes in the loop is the recipe's: recipe/parallel.py)."""

import atexit
import contextlib
import os
import re
import signal
from pathlib import Path

import torch
import torch.distributed as dist

from chunktrain.recipe.errors import PipelineError
from chunktrain.recipe.parallel import World
from chunktrain.runner.stopping import Interrupted


STAGE_NODE = "CHUNKTRAIN_STAGE_NODE"  # set by launch() for its processes: the node whose stage waits for the output
INTERRUPTED = {128 + signal.SIGINT, 128 + signal.SIGTERM}  # exit codes of a rank stopped by a signal
MAX_THREADS_PER_CORE = 8  # more threads per process than this many a core of the machine can only be a mistake


def under_torchrun() -> bool:
    """True in a process that torchrun (ours or the user's) started."""
    return "WORLD_SIZE" in os.environ and "LOCAL_RANK" in os.environ


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


def set_threads(setting: int | None) -> int:
    """Set torch's threads: train.threads, else OMP_NUM_THREADS, else SLURM's CPUs per task in a job that sets them,
    else the CPUs this process may use shared by the chunk's processes on this node."""
    names = ("OMP_NUM_THREADS", "SLURM_CPUS_PER_TASK")
    given = next(((name, int(os.environ[name])) for name in names
                  if os.environ.get(name, "").isdigit() and int(os.environ[name]) > 0), (None, None))
    source, threads = ("train.threads", setting) if setting else given
    if threads and threads > MAX_THREADS_PER_CORE * (os.cpu_count() or 1):  # can only be a mistake
        raise PipelineError(f"{source}: {threads} threads per process on a machine of {os.cpu_count()} cores; at"
                            f" most {MAX_THREADS_PER_CORE} a core")
    threads = threads or max(1, available_cpus() // int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    torch.set_num_threads(threads)
    return threads


def available_cpus(cgroup_root: Path = Path("/sys/fs/cgroup"), cgroups: Path = Path("/proc/self/cgroup")) -> int:
    """The CPUs this process may run on (its affinity: taskset, SLURM, docker --cpuset-cpus), capped by its
    cgroup's CPU quota (docker --cpus, Kubernetes limits). os.cpu_count() counts every core of the host."""
    cpus = len(os.sched_getaffinity(0))
    for line in cgroups.read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        if controllers == "":  # cgroup v2: "max 100000" or "<quota> <period>", in this cgroup or an ancestor
            files = [(cgroup_root / where.lstrip("/") / "cpu.max", None)
                     for where in [path, *map(str, Path(path).parents)]]
        elif "cpu" in controllers.split(","):  # cgroup v1
            folder = cgroup_root / controllers / path.lstrip("/")
            files = [(folder / "cpu.cfs_quota_us", folder / "cpu.cfs_period_us")]
        else:
            continue
        for quota_file, period_file in files:
            with contextlib.suppress(OSError, ValueError):
                quota, *period = quota_file.read_text().split()
                period = period_file.read_text() if period_file else period[0]
                if quota not in ("max", "-1"):
                    cpus = min(cpus, max(1, int(quota) // int(period)))
    return cpus


def deterministic() -> None:
    """Turn on torch's deterministic algorithms, which a GPU needs for a chunk to give the same bytes twice (an
    embedding's backward, some reductions); an op that has none then raises (trainer.nondeterministic_op). cuBLAS
    reads its workspace setting when CUDA starts, so this runs before anything touches the device."""
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True)
    torch.backends.cudnn.benchmark = False  # its timing-based choice of kernel may differ between runs


def join(nproc: int, device_setting: str, key: str, threads: int | None = None) -> World:
    """This process's World, deterministic, its torch threads set; under torchrun, also join the process group
    (gloo on CPU, nccl on GPU)."""
    deterministic()
    if not under_torchrun():
        return World(rank=0, size=1, device=resolve_device(device_setting, 0), threads=set_threads(threads))
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
    return World(rank=rank, size=size, device=device, writes=rank == writer, threads=set_threads(threads))


def launch(nproc: int, trainer: list[str], *, device: str, name: str, out: Path) -> None:
    """Run the trainer (`-m module args`) as `nproc` processes through torchrun's own code; any failure is one
    PipelineError.

    With torchrun's own variables PET_NNODES=N and PET_RDZV_ENDPOINT=host:port, this node runs nproc / N of the
    processes and waits (c10d rendezvous, PET_RDZV_CONF=join_timeout=<s>, default 600) for the other nodes.
    """
    nnodes = node_count(nproc, name)
    per_node = nproc // nnodes
    resolve_device(device, per_node - 1)  # refuse a missing GPU here, not once in every rank
    from torch.distributed.run import parse_args, run

    # Split the CPUs between the ranks; torchrun alone would give each one thread (train.threads still wins).
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, available_cpus() // per_node)))
    os.environ[STAGE_NODE] = "1"  # see join(): this node's first process writes the checkpoint
    rendezvous = ["--standalone"] if nnodes == 1 else ["--rdzv-backend=c10d", f"--nnodes={nnodes}"]
    try:
        run(parse_args([*rendezvous, f"--nproc-per-node={per_node}", "--max-restarts=0", *trainer]))
    except BaseException as error:
        out.unlink(missing_ok=True)  # a rank may have died after the writer wrote it: a failed stage leaves none
        failure = _translate(error, name, nproc, nnodes)
        if failure is None:
            raise
        raise failure from None


def _translate(error: BaseException, name: str, nproc: int, nnodes: int) -> PipelineError | None:
    """torchrun's exception for a failed chunk as one line, or None for a bug (keep its traceback)."""
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.elastic.rendezvous.api import RendezvousTimeoutError

    if isinstance(error, RendezvousTimeoutError):
        timeout = re.search(r"join_timeout=(\d+)", os.environ.get("PET_RDZV_CONF", ""))
        return PipelineError(f"{name}: {nnodes - 1} other node(s) did not join the rendezvous at"
                             f" {os.environ['PET_RDZV_ENDPOINT']} within {timeout[1] if timeout else 600} s"
                             f" (PET_RDZV_CONF=join_timeout=<s>); the chunk wrote no checkpoint")
    if isinstance(error, ChildFailedError):
        rank, failure = error.get_first_failure()
        if failure.exitcode in INTERRUPTED:
            return Interrupted(f"{name} stopped by a signal; `dvc repro` resumes from rank 0's snapshot",
                               failure.exitcode - 128)
        how = (f"was killed by {failure.signal_name()}" if failure.exitcode < 0
               else f"exited with status {failure.exitcode}")
        return PipelineError(f"{name}: rank {rank} of {nproc} {how}; the chunk failed and wrote no checkpoint")
    if isinstance(error, SignalException):
        return Interrupted(f"{name} stopped by {error.sigval.name}; `dvc repro` resumes from rank 0's snapshot",
                           error.sigval)
    return None


def node_count(nproc: int, name: str) -> int:
    """PET_NNODES, torchrun's own variable: how many nodes share the chunk's nproc processes (1 when unset)."""
    value = os.environ.get("PET_NNODES", "1")
    if not value.isdigit() or int(value) < 1:
        raise PipelineError(f"PET_NNODES={value[:20]!r}: give the number of nodes, e.g. PET_NNODES=2")
    nnodes = int(value)
    if nproc % nnodes:
        raise PipelineError(f"{name}: {nproc} processes do not split evenly over PET_NNODES={nnodes} nodes")
    if nnodes > 1 and not os.environ.get("PET_RDZV_ENDPOINT"):
        raise PipelineError(f"PET_NNODES={nnodes} needs PET_RDZV_ENDPOINT=<host>:<port>, where every node meets")
    return nnodes
