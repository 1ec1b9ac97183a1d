"""One chunk, from its parent checkpoint (or a matching snapshot) to its checkpoint and metrics.

run() is the whole story in order; each step is a small function or class below it.
"""

import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm import tqdm

from chunktrain.core.checkpoint import (EPOCH, GLOBAL_STEP, HISTORY, LINEAGE, LOSS, MODEL_CONFIG, MODEL_STATE,
                                        OPTIMIZER_STATE, RNG_STATE, TRANSFORM, CheckpointError, check_lineage, lineage,
                                        load_checkpoint, make_checkpoint, restore_rng_state, save_checkpoint)
from chunktrain.core.config import INIT, ChunkSpec, Runtime, TrainSettings
from chunktrain.core.curves import other_branches, tree_curves
from chunktrain.core.faults import crash_point
from chunktrain.core.files import write_atomically, write_json, write_rows
from chunktrain.core.errors import PipelineError
from chunktrain.core.model import apply_settings, build_model, build_optimizer, check_model
from chunktrain.core.splits import Dataset, Split, read_dataset
from chunktrain.core.tasks import Task, make_task
from chunktrain.training import snapshots
from chunktrain.training.batches import Batches, TableBatches, TextBatches
from chunktrain.training.loop import OneProcess, Position, train_rounds
from chunktrain.training.parallel import DataParallel, World
from chunktrain.training.schedule import Schedule
from chunktrain.training.stopping import Interrupted, ParentWatch, StopSignals


@dataclass(frozen=True)
class ChunkFiles:
    """The files a chunk stage reads and writes, as dvc.yaml passes them."""

    parent: Path  # the checkpoint it starts from
    dataset: Path  # the dataset folder: dataset.json and the splits
    out: Path  # the checkpoint it writes
    metrics: Path  # the JSON of its last epoch's losses
    snapshot: Path  # mid-chunk snapshot, outside DVC's outputs; deleted on success
    curves: Path | None = None  # the charts' data (evaluate's output), rewritten after every round (LiveCurves)


def run(spec: ChunkSpec, files: ChunkFiles, world: World, code: str, runtime: Runtime) -> None:
    """Train the chunk `spec` describes; `code` is the id of the code the stage runs (checkpoint.code_id).

    Only the writing process (world.writes) writes files.
    """
    state = prepare(spec, files, world, code)
    train_chunk(state, files, world, runtime)
    if world.writes:
        write_outputs(state.checkpoint(state.position), state.position.history[-1], files)


@dataclass
class ChunkState:
    """A chunk ready to train, and what its checkpoints are made of."""

    spec: ChunkSpec
    batches: Batches
    parent: dict
    lineage: dict  # the lineage record of the checkpoint this chunk writes (and of its snapshots)
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    position: Position
    task: Task

    def history(self, position: Position) -> list[dict]:
        """The parent's history plus this chunk's rounds."""
        return self.parent[HISTORY] + [{**record, "chunk": self.spec.name} for record in position.history]

    def checkpoint(self, position: Position) -> dict:
        """The checkpoint of the chunk at `position`."""
        history = self.history(position)
        return make_checkpoint(self.model, self.optimizer, epoch=position.epoch - 1,
                               loss=history[-1]["train_loss"] if position.history else self.parent[LOSS],
                               model_config=self.parent[MODEL_CONFIG], lineage=self.lineage,
                               global_step=position.step, history=history, transform=self.parent[TRANSFORM])


def prepare(spec: ChunkSpec, files: ChunkFiles, world: World, code: str) -> ChunkState:
    """Read the data and the parent, and restore the model where training starts: a matching snapshot, or the parent."""
    say = print if world.writes else lambda *_: None  # the other ranks print only their errors
    settings, dataset = spec.settings, read_dataset(files.dataset)
    parent = load_parent(files.parent, spec, dataset.id)
    batches = make_batches(dataset, spec, parent[MODEL_CONFIG], world.device)
    record = lineage(spec, parent[LINEAGE]["id"], dataset.id, code, world.device.type, world.threads)
    snapshot = snapshots.load_snapshot(files.snapshot, record, log=say, parent=parent, rounds=settings.rounds,
                                       steps_per_round=batches.steps)
    model, optimizer = restore(snapshot or parent, parent[MODEL_CONFIG], settings, world.device)
    position = start_position(parent, snapshot, world.device)
    if snapshot:
        say(f"resuming {spec.name} from step {snapshot[snapshots.RESUME]['step']} of the chunk")
    length = (f"epochs {parent[EPOCH] + 1}..{parent[EPOCH] + settings.epochs}" if settings.epochs else
              f"steps {parent[GLOBAL_STEP] + 1}..{parent[GLOBAL_STEP] + settings.steps}")
    say(f"train@{spec.name}: {length} from {files.parent}, lr {settings.lr}, batch size {settings.batch_size}"
        + (f" x {settings.grad_accum}" if settings.grad_accum > 1 else "")
        + (f", {world.size} processes x" if world.size > 1 else ",")
        + f" {world.threads} thread{'s' if world.threads > 1 else ''}")
    return ChunkState(spec, batches, parent, record, model, optimizer, position, make_task(parent[TRANSFORM]))


def make_batches(dataset: Dataset, spec: ChunkSpec, config: dict, device: torch.device) -> Batches:
    """The batches of the chunk's data kind, on `device`."""
    settings = spec.settings
    rows = settings.batch_size * settings.grad_accum  # per optimizer step
    if dataset.is_text:
        return TextBatches(dataset.split("train"), dataset.split("val"), windows=rows,
                           block_size=config["args"]["block_size"], steps=settings.eval_every,
                           eval_batches=settings.eval_batches, eval_windows=settings.batch_size,
                           seed=spec.init.seed, device=device)
    train, val = (_on(dataset.split(name), device) for name in ("train", "val"))
    return TableBatches(train, val, rows, spec.init.seed)


def train_chunk(state: ChunkState, files: ChunkFiles, world: World, runtime: Runtime) -> None:
    """The loop over the chunk's epochs, with progress, live metrics, snapshots and a clean stop on a signal."""
    spec, parent, position = state.spec, state.parent, state.position
    live = LiveCurves(files.curves, spec.name, files.snapshot.with_name(snapshots.CURVES_BEFORE), enabled=world.writes)

    def on_round(record: dict) -> None:
        progress.round(record)
        live.update(state.history(position))

    with StopSignals() as signals, live, Progress(spec.name, parent[EPOCH], spec.settings.rounds, state.batches,
                                                  position, files.metrics, enabled=world.writes) as progress:
        watch = ParentWatch()

        def stop_requested() -> int | None:
            return signals.received or watch.gone()

        parallel = OneProcess(stop_requested) if world.size == 1 else DataParallel(world, stop_requested)
        taker = SnapshotTaker(state, files.snapshot, runtime, world, parallel)

        def on_step(position: Position, rows: int) -> None:
            progress.step(position, rows)
            taker.step(position)

        train_rounds(state.model, state.optimizer, state.batches, position,
                     last_round=parent[EPOCH] + spec.settings.rounds, settings=spec.settings, task=state.task,
                     parallel=parallel, lr=chunk_schedule(spec, parent[EPOCH]), on_step=on_step,
                     on_round=on_round)


def _on(split: Split, device: torch.device) -> Split:
    return split if device.type == "cpu" else Split(split.x.to(device), split.y.to(device))


def load_parent(path: Path, spec: ChunkSpec, dataset_id: str) -> dict:
    """The parent checkpoint, refused unless it is chunk spec.parent of this seed, model and dataset."""
    stage = INIT if spec.parent == INIT else f"train@{spec.parent}"
    parent = load_checkpoint(path, stage)
    check_lineage(parent, path, chunk=spec.parent, spec=spec.init, dataset_id=dataset_id, stage=stage)
    try:
        check_model(parent[MODEL_CONFIG], parent[TRANSFORM])
    except PipelineError as error:  # a forged file whose lineage record was copied from a real one
        raise CheckpointError(path, f"holds no usable model ({error})", stage) from None
    return parent


def restore(start: dict, config: dict, settings: TrainSettings,
            device: torch.device) -> tuple[torch.nn.Module, torch.optim.Optimizer]:
    """The model and optimizer of a checkpoint, set to this chunk's lr, weight decay and betas."""
    # Built on the meta device and given the checkpoint's tensors (memory-mapped, copied on write): no time
    # spent initialising weights that are replaced, and no second copy of them in memory.
    with torch.device("meta"):
        model = build_model(config)
    try:
        model.load_state_dict(start[MODEL_STATE], assign=True)
        model.to(device)
        optimizer = build_optimizer(model, config)
        optimizer.load_state_dict(start[OPTIMIZER_STATE])
    except (RuntimeError, ValueError, KeyError, TypeError) as error:  # a state that does not fit its model_config
        raise PipelineError(f"the {'snapshot' if snapshots.RESUME in start else 'parent checkpoint'} holds weights"
                            f" or optimizer state that do not fit its model ({' '.join(str(error).split())[:200]})"
                            ) from None
    apply_settings(optimizer, settings.lr, settings.weight_decay, settings.betas)
    restore_rng_state(start[RNG_STATE])
    return model, optimizer


def chunk_schedule(spec: ChunkSpec, rounds_before: int):
    """lr(t0, t1) of the chunk that starts after `rounds_before` global rounds, t in rounds.

    The schedule's settings count epochs, or steps for a text, whose rounds are eval_every steps each.
    """
    settings = spec.settings
    unit = settings.eval_every if settings.steps else 1
    line = Schedule(peak=settings.lr, **settings.schedule.model_dump(), cooldown=settings.cooldown,
                    start=rounds_before * unit, end=(rounds_before + settings.rounds) * unit)
    return lambda t0, t1: line.lr(t0 * unit, t1 * unit)


def start_position(parent: dict, snapshot: dict | None, device: torch.device) -> Position:
    """Where training starts: the snapshot's position, else the round after the parent's."""
    if snapshot:
        position = snapshots.resume_position(snapshot, len(parent[HISTORY]))
    else:
        position = Position(epoch=parent[EPOCH] + 1, step=parent[GLOBAL_STEP])
    position.loss_sum = position.loss_sum.to(device)
    return position


class SnapshotTaker:
    """After each step: write a snapshot when one is due or a stop was asked for, then stop if asked."""

    def __init__(self, state: ChunkState, path: Path, runtime: Runtime, world: World, parallel: OneProcess):
        self.state, self.path, self.world, self.parallel = state, path, world, parallel
        self.schedule = snapshots.SnapshotSchedule(runtime.every_steps, runtime.every_seconds)

    def step(self, position: Position) -> None:
        step = position.step - self.state.parent[GLOBAL_STEP]  # within this chunk
        crash_point("step")
        stop, name = self.parallel.stop, self.state.spec.name
        if self.world.writes and (stop or self.schedule.due(step)):
            taken = time.monotonic()
            try:
                snapshots.save_snapshot(self.path, self.state.checkpoint(position), position, step)
            except OSError as error:  # a full disk, a file where the folder should be: the snapshot is optional
                print(f"warning: train@{name}: snapshot at step {step} not written to {self.path}"
                      f" ({error.strerror or error}); training goes on", file=sys.stderr)
            self.schedule.taken(taken)
        if stop:
            self.world.barrier()  # no rank exits before the writer's snapshot is complete
            if not self.world.writes:
                sys.exit(128 + stop)
            raise Interrupted(f"train@{name} interrupted at step {step} of the chunk;"
                              f" snapshot written to {self.path}: `dvc repro` resumes from it", stop)


class Progress:
    """A progress bar over the chunk's samples (on a terminal), one line per round, and the live metrics file.

    The metrics file is rewritten (atomically) after every round, so `dvc exp show` and editors that
    watch it follow a running chunk; its last content is the chunk's final metrics.
    """

    def __init__(self, name: str, rounds_before: int, rounds: int, batches: Batches, position: Position,
                 metrics: Path, enabled: bool):
        self.name, self.metrics, self.enabled, self.samples = name, metrics, enabled, batches.samples
        self.last_round = rounds_before + rounds
        per_step = self.samples / batches.steps
        done = (position.epoch - rounds_before - 1) * self.samples + min(round(position.batch * per_step), self.samples)
        self.unit = "window" if isinstance(batches, TextBatches) else "sample"
        self.bar = tqdm(total=rounds * self.samples, initial=done, unit=self.unit, unit_scale=True, leave=False,
                        desc=f"train@{name}", disable=None if enabled else True)
        self.started = time.perf_counter()

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc) -> None:
        self.bar.close()

    def step(self, position: Position, samples: int) -> None:
        self.bar.update(samples)

    def round(self, record: dict) -> None:
        rate = self.samples / (time.perf_counter() - self.started)
        if self.enabled:
            write_json(self.metrics, round_metrics(record))
            where = (f"epoch {record['epoch']}/{self.last_round}" if self.unit == "sample"
                     else f"step {record['step']}")
            self.bar.write(f"train@{self.name} {where}: train_loss {record['train_loss']:.5f}"
                           f"  val_loss {record['val_loss']:.5f}  lr {record['lr']:g}  {rate:,.0f} {self.unit}s/s")
        self.started = time.perf_counter()


class LiveCurves:
    """The charts follow the chunk: after every round, the charts' CSV gets its branch so far (core/curves.py),
    and DVC's live-step signal file is written, the one dvclive writes for the VS Code extension to redraw.

    The CSV is evaluate's output, so the chunk keeps a copy as evaluate left it (`kept`, beside the snapshot, where
    a resumed run finds it) and puts it back when it ends: a chunk run alone leaves `dvc status` as it found it,
    and the final rows are evaluate's. Not dvclive itself: its resume appends to its own logs without trimming
    the rounds a snapshot rolled back, and the charts already have one table, which this rewrites in its format.
    """

    def __init__(self, path: Path | None, name: str, kept: Path, enabled: bool):
        self.path, self.name, self.kept, self.others = (path if enabled else None), name, kept, []
        root = os.environ.get("DVC_ROOT") or next((str(p) for p in [Path.cwd(), *Path.cwd().parents]
                                                   if (p / ".dvc").is_dir()), None)
        self.signal = Path(root, ".dvc/tmp/exps/run/DVCLIVE_STEP_COMPLETED") if root and self.path else None
        if self.path:
            self._try(self._keep)

    def _keep(self) -> None:
        if not self.kept.is_file():  # an empty file: there was none
            write_atomically(self.kept, lambda file: file.write(self.path.read_bytes() if self.path.is_file() else b""))
        self.others = other_branches(self.kept, self.name)

    def __enter__(self) -> "LiveCurves":
        return self

    def __exit__(self, *exc) -> None:
        if self.signal:
            self.signal.unlink(missing_ok=True)  # as dvclive does when its run ends
        if self.path:  # finished, failed or stopped by a signal; after a kill -9 the resumed run puts it back
            self._try(self._put_back)

    def _put_back(self) -> None:
        if self.kept.stat().st_size:
            os.replace(self.kept, self.path)
        else:
            self.path.unlink(missing_ok=True)
            self.kept.unlink()

    def update(self, history: list[dict]) -> None:
        if self.path:
            self._try(lambda: write_rows(self.path, self.others + tree_curves([self.name], {self.name: history})))
        if self.signal and self.path:
            self._try(lambda: write_json(self.signal, {"pid": os.getpid(), "step": history[-1]["step"]}))

    def _try(self, action) -> None:
        try:
            action()
        except OSError as error:  # the charts are a view: a full disk must not stop training
            print(f"warning: train@{self.name}: live charts off for this chunk ({error.strerror or error})",
                  file=sys.stderr)
            self.path = None


def write_outputs(checkpoint: dict, last: dict, files: ChunkFiles) -> None:
    """The checkpoint, then the metrics, then the snapshot's removal: until all are done, a rerun can resume."""
    save_checkpoint(checkpoint, files.out)
    write_json(files.metrics, round_metrics(last))  # a chunk resumed after its last round has not written it
    snapshots.clear(files.snapshot)


def round_metrics(record: dict) -> dict:
    """A chunk's metrics file after the round of `record`: rewritten every round, the last one stays."""
    return {"epoch": record["epoch"], "step": record["step"], "train_loss": record["train_loss"],
            "val_loss": record["val_loss"]}
