"""Starting one chunk as several processes: the stage relaunches itself through torchrun's own code."""

import os
import signal
from pathlib import Path

from chunktrain.distributed import resolve_device
from chunktrain.errors import PipelineError
from chunktrain.signals import Interrupted

INTERRUPTED = {128 + signal.SIGINT, 128 + signal.SIGTERM}  # exit codes of a rank stopped by a signal


def launch(nproc: int, script: Path, argv: list[str], *, device: str, name: str, out: Path) -> None:
    """Run `script argv` as `nproc` processes through torchrun's own code; any failure is one PipelineError."""
    resolve_device(device, nproc - 1)  # refuse a missing GPU here, not once in every rank
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import parse_args, run

    # Split the cores between the ranks; torchrun alone would give each one thread.
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // nproc)))
    try:
        run(parse_args(["--standalone", f"--nproc-per-node={nproc}", "--max-restarts=0", str(script), *argv]))
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
