"""Crash injection for the resume tests, the way a power cut would strike.

CHUNKTRAIN_KILL_AT="<point>:<n>" SIGKILLs the process the n-th time it reaches crash_point(<point>).
Points: "step" (after an optimizer step) and "save:<file name>" (a file's bytes written by write_atomically,
not yet renamed into place). Unset, a crash point costs one string comparison.
Under torchrun, CHUNKTRAIN_KILL_RANK=<r> confines the crash to rank r; unset, every rank crashes.
"""

import os
import signal
from collections import Counter

_point, _, _count = os.environ.get("CHUNKTRAIN_KILL_AT", "").rpartition(":")
if os.environ.get("CHUNKTRAIN_KILL_RANK", os.environ.get("RANK", "0")) != os.environ.get("RANK", "0"):
    _point = ""  # another rank is the one to die
_reached: Counter = Counter()


def crash_point(name: str) -> None:
    if name == _point:
        _reached[name] += 1
        if _reached[name] == int(_count):
            os.kill(os.getpid(), signal.SIGKILL)
