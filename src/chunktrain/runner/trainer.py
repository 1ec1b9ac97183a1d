"""The process that trains a chunk: `python -m chunktrain.runner.trainer <chunk>`, run in the repo's root.

src/train.py, the stage, starts it once per process: in its own process for one, through torchrun for several here,
through srun in a SLURM job. It joins the chunk's processes, restores the chunk (recipe/chunk.py), trains it with
the runner's hooks (a clean stop on a signal, snapshots, progress, live charts) and writes the outputs.
"""

import argparse
import os
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from chunktrain.evaluation import CURVE_COLUMNS, tree_curves
from chunktrain.recipe.batches import Batches, TextBatches
from chunktrain.recipe.checkpoint import EPOCH, GLOBAL_STEP, save_checkpoint
from chunktrain.recipe.chunk import ChunkState, chunk_schedule, prepare, recipe_id, round_metrics
from chunktrain.recipe.errors import PipelineError, brief, run_stage
from chunktrain.recipe.faults import crash_point
from chunktrain.recipe.files import write_json, write_rows
from chunktrain.recipe.loop import OneProcess, Position, train_rounds
from chunktrain.recipe.parallel import DataParallel, World
from chunktrain.recipe.snapshot import save_snapshot
from chunktrain.recipe.specs import CHUNK_NAME, INIT, ChunkSpec
from chunktrain.runner import processes, snapshots
from chunktrain.runner.settings import RunPlan, RunSettings
from chunktrain.runner.stopping import Interrupted, ParentWatch, StopSignals

MODULE = "chunktrain.runner.trainer"
# train.compile: inductor's on-disk caches (FX graphs, AOT autograd), kept with the project's other untracked state
# so that only a project's first compiled chunk compiles and every later one, a new process, loads its kernels.
COMPILE_CACHE = Path(".cache/inductor")


@dataclass(frozen=True)
class ChunkFiles:
    """The files of stage train@<chunk>, as dvc.yaml names them, from the repo's root."""

    spec: Path  # what decides the chunk (stage plan writes it)
    dataset: Path  # the dataset folder: dataset.json and the splits
    out: Path  # the checkpoint it writes
    metrics: Path  # the JSON of its last round's losses, rewritten after every round
    snapshot: Path  # mid-chunk snapshot, outside DVC's outputs; deleted on success
    live: Path = Path("metrics/live.csv")  # the charts' rows of the chunk in training (LiveCurves); in git, no output

    run: Path = Path("data/plan/run.json")  # how it runs (runner/settings.py); no stage depends on it

    @classmethod
    def of(cls, name: str) -> "ChunkFiles":
        return cls(spec=Path(f"data/plan/train/{name}.json"), dataset=Path("data/dataset"),
                   out=Path(f"data/checkpoints/{name}.pt"), metrics=Path(f"metrics/train/{name}.json"),
                   snapshot=Path(f".resume/{name}/{snapshots.FILE}"))

    def settings(self, name: str) -> RunSettings:
        return RunPlan.read(self.run).of(name, self.run)

    def parent(self, spec: ChunkSpec) -> Path:
        """The checkpoint the chunk starts from."""
        return self.out.with_name(f"{spec.parent}.pt")


def is_chunk_name(text: str) -> bool:
    """Whether `text` may name a chunk: safe as a stage name, a shell word and a file stem (stage plan's rule)."""
    return bool(CHUNK_NAME.fullmatch(text)) and text != INIT


def chunk_name(text: str) -> str:
    """A chunk name that is safe as a path part, or one line."""
    if not is_chunk_name(text):
        raise PipelineError(f"chunk {brief(text)} is not a name matching {CHUNK_NAME.pattern} and not {INIT!r};"
                            " run `dvc repro` (stage plan refuses such names)")
    return text


def command(name: str) -> list[str]:
    """The trainer's arguments after `python`, the one list every launcher starts it with (src/ on PYTHONPATH)."""
    return ["-m", MODULE, name]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("chunk", help="the chunk's name: trains train@<chunk> of dvc.yaml, from the repo's root")
    name = chunk_name(parser.parse_args(argv).chunk)
    files = ChunkFiles.of(name)
    spec, settings = ChunkSpec.read(files.spec), files.settings(name)
    os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(COMPILE_CACHE.resolve()))  # torchrun's ranks inherit it
    world = processes.join(spec.nproc, spec.device, f"train@{name}: nproc", settings.threads)
    state = prepare(spec, files.parent(spec), files.dataset, files.snapshot, world, recipe_id())
    if world.writes:
        print(header(state, files.parent(spec), world), flush=True)
    # From the first step to the last output, a stop signal stops at a clean step; one that comes after the last
    # step (SLURM's warning before a time limit, say) lets the outputs be written, and the chunk is complete.
    with StopSignals() as signals:
        try:
            train(state, files, world, settings, signals)
        except RuntimeError as error:
            raise nondeterministic_op(error, name, world) or error
        if world.writes:
            write_outputs(state, files)
    if signals.received and world.writes:
        print(f"train@{name}: {signal.Signals(signals.received).name} came after the last step; the chunk's outputs"
              " are written and it is complete", flush=True)


def nondeterministic_op(error: RuntimeError, name: str, world: World) -> PipelineError | None:
    """torch's error for an op that has no deterministic version (processes.deterministic) as one line that names
    it, or None for another error."""
    message = str(error)
    if "does not have a deterministic implementation" not in message:
        return None
    return PipelineError(f"train@{name}: {message.split()[0]} has no deterministic implementation on"
                         f" {world.device.type}, so the chunk would not give the same bytes twice; use another op in"
                         " the model (torch.use_deterministic_algorithms's documentation lists them)")


def header(state: ChunkState, parent_path: Path, world: World) -> str:
    """What the chunk trains, with the lr of its first and last step as the schedule gives them."""
    spec, parent, settings = state.spec, state.parent, state.spec.settings
    length = (f"epochs {parent[EPOCH] + 1}..{parent[EPOCH] + settings.epochs}" if settings.epochs else
              f"steps {parent[GLOBAL_STEP] + 1}..{parent[GLOBAL_STEP] + settings.steps}")
    start, end, step = parent[EPOCH], parent[EPOCH] + settings.rounds, 1 / state.batches.steps  # in rounds
    lr = chunk_schedule(spec, start)
    first, last = f"{lr(start, start + step):.3g}", f"{lr(end - step, end):.3g}"
    threads = state.lineage["threads"]
    return (f"train@{spec.name}: {length} from {parent_path}, lr {first}" + (f" to {last}" if last != first else "")
            + past_schedule(spec, start) + f", batch size {settings.batch_size}"
            + (f" x {settings.grad_accum}" if settings.grad_accum > 1 else "")
            + (", compiled" if settings.compile else "")
            + (f", {world.size} processes x" if world.size > 1 else ",")
            + f" {threads} thread{'s' if threads > 1 else ''}")


def past_schedule(spec: ChunkSpec, rounds_before: int) -> str:
    """A note when the chunk starts where train.schedule's decay has already reached min_lr."""
    settings = spec.settings
    total = settings.schedule.total
    if settings.cooldown or total is None or rounds_before * (settings.eval_every if settings.steps else 1) < total:
        return ""
    return (f" (past train.schedule.total {total:g}: every step at min_lr; to train on at a higher lr, see README,"
            " \"Extending a run\")")


def train(state: ChunkState, files: ChunkFiles, world: World, settings: RunSettings, signals: StopSignals) -> None:
    """The chunk's rounds, with a clean stop on a signal, snapshots, progress and live charts."""
    spec, parent = state.spec, state.parent
    with LiveCurves(files.live, spec.name, enabled=world.writes) as live, \
            Progress(spec.name, parent[EPOCH], spec.settings.rounds, state.batches, state.position, files.metrics,
                     enabled=world.writes) as progress:
        watch = ParentWatch()

        def stop_requested() -> int | None:
            return signals.received or watch.gone()

        parallel = OneProcess(stop_requested) if world.size == 1 else DataParallel(world, stop_requested)
        taker = SnapshotTaker(state, files.snapshot, settings, world)

        def on_step(position: Position, rows: int) -> None:
            progress.step(rows)
            taker.step(position, parallel.stop)

        def on_round(record: dict) -> None:
            progress.round(record)
            live.update(state.history(state.position))

        train_rounds(state.model, state.optimizer, state.batches, state.position,
                     last_round=parent[EPOCH] + spec.settings.rounds, settings=spec.settings, task=state.task,
                     parallel=parallel, lr=chunk_schedule(spec, parent[EPOCH]), on_step=on_step, on_round=on_round)


def write_outputs(state: ChunkState, files: ChunkFiles) -> None:
    """The checkpoint, then the metrics, then the snapshot's removal: until all are done, a rerun can resume."""
    save_checkpoint(state.checkpoint(state.position), files.out)
    write_json(files.metrics, round_metrics(state.position.history[-1]))  # a chunk resumed after its last round
    crash_point("clear")
    snapshots.clear(files.snapshot)


class SnapshotTaker:
    """After each step: write a snapshot when one is due or a stop was asked for, then stop if asked."""

    def __init__(self, state: ChunkState, path: Path, settings: RunSettings, world: World):
        self.state, self.path, self.world = state, path, world
        self.schedule = snapshots.SnapshotSchedule(settings.snapshot_every_steps, settings.snapshot_every_seconds)

    def step(self, position: Position, stop: int | None) -> None:
        step = position.step - self.state.parent[GLOBAL_STEP]  # within this chunk
        crash_point("step")
        if self.world.writes and (stop or self.schedule.due(step)):
            taken = time.monotonic()
            try:
                save_snapshot(self.path, self.state.checkpoint(position), position, step)
            except OSError as error:  # a full disk, a file where the folder should be: the snapshot is optional
                print(f"warning: train@{self.state.spec.name}: snapshot at step {step} not written to {self.path}"
                      f" ({error.strerror or error}); training goes on", file=sys.stderr)
            self.schedule.taken(taken)
        if stop:
            self.world.barrier()  # no rank exits before the writer's snapshot is complete
            if not self.world.writes:
                sys.exit(128 + stop)
            raise Interrupted(f"train@{self.state.spec.name} interrupted at step {step} of the chunk;"
                              f" snapshot written to {self.path}: `dvc repro` resumes from it", stop)


class Progress:
    """A progress bar over the chunk's samples on a terminal, else a line every LOG_SECONDS; a line per round; and
    the live metrics file.

    The metrics file is rewritten (atomically) after every round, so `dvc exp show` and editors that
    watch it follow a running chunk; its last content is the chunk's final metrics.
    """

    LOG_SECONDS = 60.0  # off a terminal (a log file, a SLURM job's output): where the chunk is, this often

    def __init__(self, name: str, rounds_before: int, rounds: int, batches: Batches, position: Position,
                 metrics: Path, enabled: bool):
        self.name, self.metrics, self.enabled, self.samples = name, metrics, enabled, batches.samples
        self.last_round = rounds_before + rounds
        per_step = self.samples / batches.steps
        done = (position.epoch - rounds_before - 1) * self.samples + min(round(position.batch * per_step), self.samples)
        self.unit = "window" if isinstance(batches, TextBatches) else "sample"
        self.bar = tqdm(total=rounds * self.samples, initial=done, unit=self.unit, unit_scale=True, leave=False,
                        desc=f"train@{name}", disable=None if enabled else True)
        self.total, self.done, self.first = rounds * self.samples, done, done
        self.started = self.round_started = self.logged = time.perf_counter()

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc) -> None:
        self.bar.close()

    def step(self, samples: int) -> None:
        self.bar.update(samples)
        self.done += samples
        if self.enabled and self.bar.disable and time.perf_counter() - self.logged >= self.LOG_SECONDS:
            self.logged = time.perf_counter()
            rate = (self.done - self.first) / (self.logged - self.started)
            print(f"train@{self.name}: {self.done / self.total:.0%} of the chunk, {rate:,.0f} {self.unit}s/s,"
                  f" {self.left()} left", flush=True)

    def round(self, record: dict) -> None:
        rate = self.samples / (time.perf_counter() - self.round_started)
        if self.enabled:
            write_json(self.metrics, round_metrics(record))
            where = (f"epoch {record['epoch']}/{self.last_round}" if self.unit == "sample"
                     else f"step {record['step']}")
            self.bar.write(f"train@{self.name} {where}: train_loss {record['train_loss']:.5f}"
                           f"  val_loss {record['val_loss']:.5f}  lr {record['lr']:g}  {rate:,.0f} {self.unit}s/s"
                           + (f", {self.left()} left" if self.done < self.total else ""))
        self.round_started = self.logged = time.perf_counter()

    def left(self) -> str:
        """The time the chunk has left at the speed this process has trained it so far."""
        rate = (self.done - self.first) / (time.perf_counter() - self.started)
        return tqdm.format_interval((self.total - self.done) / rate) if rate > 0 else "?"


class LiveCurves:
    """The charts follow the chunk: after every round, metrics/live.csv (which dvc.yaml's plots read beside
    evaluate's curves.csv) holds the chunk's branch so far as "<chunk> (training)", and DVC's live-step signal file
    is written, the one dvclive writes for the VS Code extension to redraw. When the chunk ends, the file is back
    to its header alone, as git holds it. Not dvclive itself: its resume appends to its own logs without trimming the
    rounds a snapshot rolled back.
    """

    def __init__(self, path: Path, name: str, enabled: bool):
        self.path, self.name, self.lineage = (path if enabled else None), name, {}
        root = os.environ.get("DVC_ROOT") or next((str(p) for p in [Path.cwd(), *Path.cwd().parents]
                                                   if (p / ".dvc").is_dir()), None)
        self.signal = Path(root, ".dvc/tmp/exps/run/DVCLIVE_STEP_COMPLETED") if root and self.path else None

    def __enter__(self) -> "LiveCurves":
        return self

    def __exit__(self, *exc) -> None:
        if self.signal:
            self.signal.unlink(missing_ok=True)  # as dvclive does when its run ends
        if self.path:  # finished, failed or stopped by a signal; after a kill -9 the next run of the chunk does it
            self._try(lambda: write_rows(self.path, [], CURVE_COLUMNS))

    def update(self, history: list[dict]) -> None:
        if self.path:
            branch = f"{self.name} (training)"
            self._try(lambda: write_rows(self.path, tree_curves([branch], {branch: history}, self.specs(history)),
                                         CURVE_COLUMNS))
        if self.signal and self.path:
            self._try(lambda: write_json(self.signal, {"pid": os.getpid(), "step": history[-1]["step"]}))

    def specs(self, history: list[dict]) -> dict[str, ChunkSpec]:
        """The spec of every chunk in the lineage, which the lr of each step follows: the ones stage plan wrote,
        which DVC has trained the lineage from."""
        for name in {record["chunk"] for record in history} - set(self.lineage):
            self.lineage[name] = ChunkSpec.read(ChunkFiles.of(name).spec)
        return self.lineage

    def _try(self, action) -> None:
        try:
            action()
        except (OSError, PipelineError) as error:  # the charts are a view: a full disk must not stop training,
            reason = getattr(error, "strerror", None) or error  # nor a lineage's spec stage plan no longer wrote
            print(f"warning: train@{self.name}: live charts off for this chunk ({reason})", file=sys.stderr)
            self.path = None


if __name__ == "__main__":
    run_stage(main)
