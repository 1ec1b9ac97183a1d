"""The one error type for the user's mistakes, and how stage scripts report it."""

import re
import reprlib
import sys
from collections.abc import Callable

# What torch's allocators say, in the RuntimeError they raise: on the CPU "DefaultCPUAllocator: can't allocate memory:
# you tried to allocate N bytes", on CUDA (OutOfMemoryError) "CUDA out of memory. Tried to allocate ..."
OUT_OF_MEMORY = re.compile(r"(?:can't allocate memory|not enough memory|out of memory)[^.]*")

_brief = reprlib.Repr()
_brief.maxlevel, _brief.maxlist, _brief.maxtuple, _brief.maxdict = 1, 4, 4, 4
_brief.maxstring = _brief.maxother = _brief.maxlong = 40


class PipelineError(Exception):
    """A bad input: params, a missing or incompatible checkpoint, a diverged run."""


def brief(value) -> str:
    """A repr of bounded length (80 characters), whatever the input: error messages quote user input through this."""
    text = _brief.repr(value)
    return text if len(text) <= 80 else text[:76] + "...'"


def did_you_mean(name, names, cutoff: float = 0.6) -> str:
    """", did you mean 'x'?" for the one of `names` nearest to `name` (case aside), or nothing when none is close."""
    import difflib

    by_lower = {str(candidate).lower(): str(candidate) for candidate in names}
    close = difflib.get_close_matches(str(name).lower(), list(by_lower), n=1, cutoff=cutoff)
    return f", did you mean {by_lower[close[0]]!r}?" if close else ""


def run_stage(main: Callable[[], None]) -> None:
    """Run a stage's main(); a PipelineError becomes one line on stderr and its exit code (default 2)."""
    try:
        main()
    except PipelineError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(getattr(error, "exit_code", 2))
    except (MemoryError, RuntimeError) as error:  # a table, a model or a batch too large for this machine
        words = " ".join(str(error).split())
        found = OUT_OF_MEMORY.search(words)
        if isinstance(error, RuntimeError) and not found:
            raise
        print(f"error: out of memory ({found[0] if found else words[:200] or 'MemoryError'}); use less data, a"
              " smaller batch_size or a smaller model", file=sys.stderr)
        sys.exit(2)
