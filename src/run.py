"""`make run`'s `dvc repro`: DVC's own command, then the wall time of each stage it ran, or where a chunk stopped.

Not a stage. It runs DVC's command line in this process and times each stage's command (DVC records no
durations), so the terminal, the progress bar and Ctrl-C behave exactly as under `dvc repro`. A chunk stopped by
Ctrl-C or SIGTERM is not a failure: the last line says where it stopped and that `make run` goes on from there, and
this process then ends by the same signal, as a program stopped by one should (make says `Interrupt`).

DVC runs a stage's command with `$SHELL -c`, or `/bin/sh -c` where SHELL is unset (containers, cron, CI). Debian's
sh (dash) does not exec the command: Ctrl-C kills the shell while the trainer, beneath it, is still writing its
snapshot, and DVC reports the shell's death. So where SHELL is unset, this runs the commands with bash, which
execs a single command; where a shell still dies by the signal, this waits for what it left running.
"""

import contextlib
import os
import re
import signal
import sys
import time

import dvc.stage.run
import psutil
from dvc.cli import main as dvc_main
from dvc.stage.exceptions import StageCmdFailedError

EXITED = re.compile(r"exited with (-?\d+)$")  # the end of DVC's StageCmdFailedError message
# A stopped stage's exit codes: the trainer's own exit (130, 143), or the shell above it killed by the signal
STOPS = {code: sig for sig in (signal.SIGINT, signal.SIGTERM) for code in (128 + sig, -sig)}


class StageTimes:
    """Wraps DVC's cmd_run, the function that runs a stage's command: how long each took, and how it ended."""

    def __init__(self):
        self.times: list[tuple[str, float]] = []
        self.stopped: tuple[str, signal.Signals] | None = None  # the stage a signal stopped, and the signal

    def wrap(self, cmd_run):
        def timed(stage, *args, **kwargs):
            started = time.perf_counter()
            try:
                return cmd_run(stage, *args, **kwargs)
            except StageCmdFailedError as error:
                code = EXITED.search(str(error))
                if code and int(code[1]) in STOPS:
                    self.stopped = stage.addressing, STOPS[int(code[1])]
                raise
            finally:
                self.times.append((stage.addressing, time.perf_counter() - started))
        return timed


def duration(seconds: float) -> str:
    minutes, seconds = divmod(seconds, 60)
    hours, minutes = divmod(int(minutes), 60)
    return (f"{hours} h {minutes:02d} min" if hours else f"{minutes} min {seconds:02.0f} s" if minutes
            else f"{seconds:.1f} s")


def summary(times: list[tuple[str, float]]) -> str:
    """A table of the stages that ran, each with its command's wall time."""
    if not times:
        return "no stage ran"
    width = max(len(name) for name, _ in times)
    rows = [f"  {name:<{width}}  {duration(seconds):>12}" for name, seconds in times]
    return "\n".join(["wall time of each stage that ran:", *rows,
                      f"  {'total':<{width}}  {duration(sum(seconds for _, seconds in times)):>12}"])


def where_stopped(stage: str, sig: signal.Signals) -> str:
    """The last line after a stage stopped by `sig`: for a chunk, where its snapshot stands."""
    from chunktrain.runner import snapshots  # torch: imported only when a line needs it
    from chunktrain.runner.trainer import ChunkFiles, is_chunk_name

    kind, _, chunk = stage.partition("@")
    if kind != "train" or not is_chunk_name(chunk):
        return f"interrupted: {stage} stopped by {sig.name} before it finished; `make run` runs it again"
    path = ChunkFiles.of(chunk).snapshot
    if not path.is_file():
        return f"interrupted: {stage} stopped by {sig.name} before its first snapshot; `make run` starts it again"
    return (f"interrupted: {stage} stopped by {sig.name} at {snapshots.position(path)}; its snapshot {path} is"
            " kept and `make run` resumes from it")


def wait_for_stopped_commands(timeout: float = 120.0) -> None:
    """Wait for the stage commands still running in this process group (DVC sets DVC_STAGE for them): a trainer
    whose shell died by the signal, writing its snapshot."""
    left = []
    for process in psutil.process_iter():
        with contextlib.suppress(psutil.Error, ProcessLookupError):
            if os.getpgid(process.pid) == os.getpgrp() and "DVC_STAGE" in process.environ():
                left.append(process)
    psutil.wait_procs(left, timeout=timeout)


def main(argv: list[str] | None = None) -> int:
    if not os.environ.get("SHELL") and os.path.exists("/bin/bash"):
        os.environ["SHELL"] = "/bin/bash"
    times = StageTimes()
    dvc.stage.run.cmd_run = times.wrap(dvc.stage.run.cmd_run)
    code = dvc_main(["repro", *(sys.argv[1:] if argv is None else argv)])
    if times.stopped:
        wait_for_stopped_commands()
    print(summary(times.times))
    if times.stopped:
        print(where_stopped(*times.stopped), flush=True)
        signal.signal(times.stopped[1], signal.SIG_DFL)
        os.kill(os.getpid(), times.stopped[1])
    return code


if __name__ == "__main__":
    sys.exit(main())
