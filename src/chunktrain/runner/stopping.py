"""When a chunk stops early: Ctrl-C, SIGTERM, SLURM's warning before a job's time limit, or the `dvc` that started
it gone; always at a clean step."""

import contextlib
import os
import signal
import time
from pathlib import Path

import psutil

from chunktrain.recipe.errors import PipelineError


class Interrupted(PipelineError):
    """A stop signal arrived; a snapshot was written and `dvc repro` will resume from it."""

    def __init__(self, message: str, signum: int):
        super().__init__(message)
        self.exit_code = 128 + signum


class StopSignals:
    """Within `with`, the stop signals only set `received`, so training stops at a clean step."""

    # SIGUSR1: what SLURM sends a job's processes before its time limit (runner/slurm.py), as SIGTERM would kill srun
    SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGUSR1)

    def __init__(self):
        self.received: int | None = None

    def __enter__(self) -> "StopSignals":
        self.previous = {signum: signal.signal(signum, self._handle) for signum in self.SIGNALS}
        return self

    def __exit__(self, *exc) -> None:
        for signum, handler in self.previous.items():
            signal.signal(signum, handler)

    def _handle(self, signum, frame) -> None:
        self.received = signum


class ParentWatch:
    """The `dvc` process that started this stage (DVC sets DVC_STAGE for its stage commands), if any.

    gone() says SIGTERM once it has died, so a trainer whose `dvc` was killed snapshots and stops instead of
    training on beside the next `dvc repro`. It looks at most once a second.
    """

    def __init__(self):
        self.process = _dvc_ancestor() if "DVC_STAGE" in os.environ else None
        self.checked = time.monotonic()

    def gone(self) -> int | None:
        if self.process is None or time.monotonic() - self.checked < 1.0:
            return None
        self.checked = time.monotonic()
        alive = self.process.is_running() and self.process.status() != psutil.STATUS_ZOMBIE
        return None if alive else signal.SIGTERM


def _dvc_ancestor() -> "psutil.Process | None":
    """The nearest ancestor process whose command runs dvc."""
    for process in psutil.Process().parents():
        with contextlib.suppress(psutil.Error):
            if any(Path(part).name in ("dvc", "dvc.exe") or part.endswith("dvc/__main__.py")
                   for part in process.cmdline()[:3]):
                return process
    return None
