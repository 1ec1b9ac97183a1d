"""Crash injection for the resume tests, the way a power cut would strike.

CHUNKTRAIN_KILL_AT="<point>:<n>" SIGKILLs the process the n-th time it reaches crash_point(<point>).
Points: "step" (after an optimizer step), "save:<file name>" (a file's bytes written by write_atomically,
not yet renamed into place) and "clear" (the chunk's outputs written, its snapshot not yet removed). Unset, a crash
point costs one string comparison. CHUNKTRAIN_KILL_SIGNAL=USR1 (say) sends that signal instead, as SLURM's warning
before a time limit would arrive at that moment.
Under torchrun, CHUNKTRAIN_KILL_RANK=<r> confines the crash to rank r; unset, every rank crashes.
"""

import os
import signal
from collections import Counter

_point, _, _count = os.environ.get("CHUNKTRAIN_KILL_AT", "").rpartition(":")
if os.environ.get("CHUNKTRAIN_KILL_RANK", os.environ.get("RANK", "0")) != os.environ.get("RANK", "0"):
    _point = ""  # another rank is the one to die
_signal = signal.Signals[f"SIG{os.environ.get('CHUNKTRAIN_KILL_SIGNAL', 'KILL')}"]
_reached: Counter = Counter()


def crash_point(name: str) -> None:
    if name == _point:
        _reached[name] += 1
        if _reached[name] == int(_count):
            os.kill(os.getpid(), _signal)
