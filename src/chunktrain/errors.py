"""The one error type for the user's mistakes, and how stage scripts report it."""

import sys
from collections.abc import Callable


class PipelineError(Exception):
    """A bad input: params, a missing or incompatible checkpoint, a diverged run."""


def run_stage(main: Callable[[], None]) -> None:
    """Run a stage's main(); a PipelineError becomes one line on stderr and its exit code (default 2)."""
    try:
        main()
    except PipelineError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(getattr(error, "exit_code", 2))
