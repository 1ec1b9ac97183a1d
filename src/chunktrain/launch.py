"""Starting one chunk as several processes: the stage relaunches itself through torchrun's own code."""

import os
import re
import signal
from pathlib import Path

from chunktrain.distributed import STAGE_NODE, resolve_device
from chunktrain.errors import PipelineError
from chunktrain.signals import Interrupted

INTERRUPTED = {128 + signal.SIGINT, 128 + signal.SIGTERM}  # exit codes of a rank stopped by a signal


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
    os.environ[STAGE_NODE] = "1"  # see distributed.join(): this node's first process writes the checkpoint
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
        raise PipelineError(f"PET_NNODES={value[:20]!r}: give the number of nodes, e.g. PET_NNODES=2")
    nnodes = int(value)
    if nproc % nnodes:
        raise PipelineError(f"{name}: {nproc} processes do not split evenly over PET_NNODES={nnodes} nodes")
    if nnodes > 1 and not os.environ.get("PET_RDZV_ENDPOINT"):
        raise PipelineError(f"PET_NNODES={nnodes} needs PET_RDZV_ENDPOINT=<host>:<port>, where every node meets")
    return nnodes
