"""`make run`'s `dvc repro`: DVC's own command, then the wall time of each stage it ran, or where a chunk stopped.

Not a stage. It runs DVC's command line in this process and times each stage's command (DVC records no
durations), so the terminal, the progress bar and Ctrl-C behave exactly as under `dvc repro`. A chunk stopped by
Ctrl-C or SIGTERM is not a failure: the last line says where it stopped and that `make run` goes on from there, and
this process then ends by the same signal, as a program stopped by one should (make says `Interrupt`).
"""

import os
import re
import signal
import sys
import time

import dvc.stage.run
from dvc.cli import main as dvc_main
from dvc.stage.exceptions import StageCmdFailedError

EXITED = re.compile(r"exited with (-?\d+)$")  # the end of DVC's StageCmdFailedError message
STOPS = {128 + signal.SIGINT: signal.SIGINT, 128 + signal.SIGTERM: signal.SIGTERM}  # a stopped stage's exit codes


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


def main(argv: list[str] | None = None) -> int:
    times = StageTimes()
    dvc.stage.run.cmd_run = times.wrap(dvc.stage.run.cmd_run)
    code = dvc_main(["repro", *(sys.argv[1:] if argv is None else argv)])
    print(summary(times.times))
    if times.stopped:
        print(where_stopped(*times.stopped), flush=True)
        signal.signal(times.stopped[1], signal.SIG_DFL)
        os.kill(os.getpid(), times.stopped[1])
    return code


if __name__ == "__main__":
    sys.exit(main())
