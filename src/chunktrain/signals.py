"""Ctrl-C and SIGTERM during a chunk: stop at a clean step instead of dying mid-update."""

import signal

from chunktrain.errors import PipelineError


class Interrupted(PipelineError):
    """SIGINT or SIGTERM arrived; a snapshot was written and `dvc repro` will resume from it."""

    def __init__(self, message: str, signum: int):
        super().__init__(message)
        self.exit_code = 128 + signum


class StopSignals:
    """Within `with`, SIGINT and SIGTERM only set `received`, so training stops at a clean step."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

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
