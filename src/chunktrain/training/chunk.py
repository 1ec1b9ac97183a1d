"""One chunk, from its parent checkpoint (or a matching snapshot) to its checkpoint and metrics.

run() is the whole story in order; each step is a small function or class below it.
"""

import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm import tqdm

from chunktrain.core.checkpoint import (EPOCH, GLOBAL_STEP, HISTORY, LINEAGE, LOSS, MODEL_CONFIG, MODEL_STATE,
                                        OPTIMIZER_STATE, RNG_STATE, TRANSFORM, check_lineage, lineage,
                                        load_checkpoint, make_checkpoint, restore_rng_state, save_checkpoint)
from chunktrain.core.config import INIT, ChunkSpec, SnapshotPolicy
from chunktrain.core.faults import crash_point
from chunktrain.core.files import write_json
from chunktrain.core.model import apply_settings, build_model, build_optimizer
from chunktrain.core.splits import Split, read_dataset, read_split
from chunktrain.core.tasks import Task, make_task
from chunktrain.training import snapshots
from chunktrain.training.loop import OneProcess, Position, train_epochs
from chunktrain.training.parallel import DataParallel, World
from chunktrain.training.schedule import Schedule
from chunktrain.training.stopping import Interrupted, ParentWatch, StopSignals


@dataclass(frozen=True)
class ChunkFiles:
    """The files a chunk stage reads and writes, as dvc.yaml passes them."""

    parent: Path  # the checkpoint it starts from
    train: Path
    val: Path
    dataset: Path  # dataset.json: the dataset's id
    out: Path  # the checkpoint it writes
    metrics: Path  # the JSON of its last epoch's losses
    snapshot: Path  # mid-chunk snapshot, outside DVC's outputs; deleted on success


def run(spec: ChunkSpec, files: ChunkFiles, world: World, code: str, policy: SnapshotPolicy) -> None:
    """Train the chunk `spec` describes; `code` is the id of the code the stage runs (checkpoint.code_id).

    Only the writing process (world.writes) writes files.
    """
    state = prepare(spec, files, world, code)
    train_chunk(state, files, world, policy)
    if world.writes:
        write_outputs(state.checkpoint(state.position), state.position.history[-1], files)


@dataclass
class ChunkState:
    """A chunk ready to train, and what its checkpoints are made of."""

    spec: ChunkSpec
    train: Split
    val: Split
    parent: dict
    lineage: dict  # the lineage record of the checkpoint this chunk writes (and of its snapshots)
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    position: Position
    steps_per_epoch: int
    task: Task

    def checkpoint(self, position: Position) -> dict:
        """The checkpoint of the chunk at `position`: the parent's history plus this chunk's epochs."""
        history = self.parent[HISTORY] + [{**record, "chunk": self.spec.name} for record in position.history]
        steps = (position.epoch - self.parent[EPOCH] - 1) * self.steps_per_epoch + position.batch
        return make_checkpoint(self.model, self.optimizer, epoch=position.epoch - 1,
                               loss=history[-1]["train_loss"] if position.history else self.parent[LOSS],
                               model_config=self.parent[MODEL_CONFIG], lineage=self.lineage,
                               global_step=self.parent[GLOBAL_STEP] + steps, history=history,
                               transform=self.parent[TRANSFORM])


def prepare(spec: ChunkSpec, files: ChunkFiles, world: World, code: str) -> ChunkState:
    """Read the data and the parent, and restore the model where training starts: a matching snapshot, or the parent."""
    say = print if world.writes else lambda *_: None  # the other ranks print only their errors
    settings, dataset = spec.settings, read_dataset(files.dataset)
    train, val = (_on(read_split(path), world.device) for path in (files.train, files.val))
    parent = load_parent(files.parent, spec, dataset.id)
    record = lineage(spec, parent[LINEAGE]["id"], dataset.id, code, world.device.type)
    steps_per_epoch = math.ceil(len(train.y) / settings.batch_size)
    snapshot = snapshots.load_snapshot(files.snapshot, record, log=say, parent=parent, epochs=settings.epochs,
                                       steps_per_epoch=steps_per_epoch)
    model, optimizer = restore(snapshot or parent, parent[MODEL_CONFIG], settings.lr, settings.weight_decay,
                               world.device)
    position = start_position(parent, snapshot, world.device)
    if snapshot:
        say(f"resuming {spec.name} from step {snapshot[snapshots.RESUME]['step']} (epoch {position.epoch})")
    say(f"train@{spec.name}: epochs {parent[EPOCH] + 1}..{parent[EPOCH] + settings.epochs} from {files.parent},"
        f" lr {settings.lr}, batch size {settings.batch_size}"
        + (f", {world.size} processes" if world.size > 1 else ""))
    return ChunkState(spec, train, val, parent, record, model, optimizer, position, steps_per_epoch,
                      make_task(parent[TRANSFORM]))


def train_chunk(state: ChunkState, files: ChunkFiles, world: World, policy: SnapshotPolicy) -> None:
    """The loop over the chunk's epochs, with progress, live metrics, snapshots and a clean stop on a signal."""
    spec, parent, position = state.spec, state.parent, state.position
    with StopSignals() as signals, Progress(spec.name, parent[EPOCH], spec.settings.epochs, len(state.train.y),
                                            spec.settings.batch_size, position, files.metrics,
                                            enabled=world.writes) as progress:
        watch = ParentWatch()

        def stop_requested() -> int | None:
            return signals.received or watch.gone()

        parallel = OneProcess(stop_requested) if world.size == 1 else DataParallel(world, stop_requested)
        taker = SnapshotTaker(state, files.snapshot, policy, world, parallel)

        def on_step(position: Position, rows: int) -> None:
            progress.step(position, rows)
            taker.step(position)

        train_epochs(state.model, state.optimizer, state.train, state.val, position,
                     last_epoch=parent[EPOCH] + spec.settings.epochs, batch_size=spec.settings.batch_size,
                     seed=spec.init.seed, task=state.task, parallel=parallel,
                     lr=chunk_schedule(spec, parent[EPOCH]).lr, on_step=on_step, on_epoch=progress.epoch)


def _on(split: Split, device: torch.device) -> Split:
    return split if device.type == "cpu" else Split(split.x.to(device), split.y.to(device))


def load_parent(path: Path, spec: ChunkSpec, dataset_id: str) -> dict:
    """The parent checkpoint, refused unless it is chunk spec.parent of this seed, model and dataset."""
    stage = INIT if spec.parent == INIT else f"train@{spec.parent}"
    parent = load_checkpoint(path, stage)
    check_lineage(parent, path, chunk=spec.parent, spec=spec.init, dataset_id=dataset_id, stage=stage)
    return parent


def restore(start: dict, config: dict, lr: float, weight_decay: float,
            device: torch.device) -> tuple[torch.nn.Module, torch.optim.Optimizer]:
    """The model and optimizer of a checkpoint, set to this chunk's lr and weight decay."""
    # Built on the meta device and given the checkpoint's tensors (memory-mapped, copied on write): no time
    # spent initialising weights that are replaced, and no second copy of them in memory.
    with torch.device("meta"):
        model = build_model(config)
    model.load_state_dict(start[MODEL_STATE], assign=True)
    model.to(device)
    optimizer = build_optimizer(model, config)
    optimizer.load_state_dict(start[OPTIMIZER_STATE])
    apply_settings(optimizer, lr, weight_decay)
    restore_rng_state(start[RNG_STATE])
    return model, optimizer


def chunk_schedule(spec: ChunkSpec, epochs_before: int) -> Schedule:
    """The lr schedule of a chunk that starts after `epochs_before` global epochs."""
    settings = spec.settings
    return Schedule(peak=settings.lr, **settings.schedule.model_dump(), cooldown=settings.cooldown,
                    start=epochs_before, end=epochs_before + settings.epochs)


def start_position(parent: dict, snapshot: dict | None, device: torch.device) -> Position:
    """Where training starts: the snapshot's position, else the epoch after the parent's."""
    if snapshot:
        position = snapshots.resume_position(snapshot, len(parent[HISTORY]))
    else:
        position = Position(epoch=parent[EPOCH] + 1)
    position.loss_sum = position.loss_sum.to(device)
    return position


class SnapshotTaker:
    """After each step: write a snapshot when one is due or a stop was asked for, then stop if asked."""

    def __init__(self, state: ChunkState, path: Path, policy: SnapshotPolicy, world: World, parallel: OneProcess):
        self.state, self.path, self.world, self.parallel = state, path, world, parallel
        self.schedule = snapshots.SnapshotSchedule(policy.every_steps, policy.every_seconds)

    def step(self, position: Position) -> None:
        first_epoch = self.state.parent[EPOCH] + 1
        step = (position.epoch - first_epoch) * self.state.steps_per_epoch + position.batch  # within this chunk
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
            raise Interrupted(f"train@{name} interrupted at step {step} (epoch {position.epoch});"
                              f" snapshot written to {self.path}: `dvc repro` resumes from it", stop)


class Progress:
    """A progress bar over the chunk's samples (on a terminal), one line per epoch, and the live metrics file.

    The metrics file is rewritten (atomically) after every epoch, so `dvc exp show` and editors that
    watch it follow a running chunk; its last content is the chunk's final metrics.
    """

    def __init__(self, name: str, epochs_before: int, epochs: int, rows: int, batch_size: int, position: Position,
                 metrics: Path, enabled: bool):
        self.name, self.metrics, self.enabled = name, metrics, enabled
        self.rows, self.last_epoch = rows, epochs_before + epochs
        done = (position.epoch - epochs_before - 1) * rows + min(position.batch * batch_size, rows)
        self.bar = tqdm(total=epochs * rows, initial=done, unit="sample", unit_scale=True, leave=False,
                        desc=f"train@{name}", disable=None if enabled else True)
        self.started = time.perf_counter()

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc) -> None:
        self.bar.close()

    def step(self, position: Position, rows: int) -> None:
        self.bar.update(rows)

    def epoch(self, record: dict) -> None:
        rate = self.rows / (time.perf_counter() - self.started)
        if self.enabled:
            write_json(self.metrics, epoch_metrics(record))
            self.bar.write(f"train@{self.name} epoch {record['epoch']}/{self.last_epoch}: train_loss"
                           f" {record['train_loss']:.5f}  val_loss {record['val_loss']:.5f}  lr {record['lr']:g}"
                           f"  {rate:,.0f} samples/s")
        self.started = time.perf_counter()


def write_outputs(checkpoint: dict, last: dict, files: ChunkFiles) -> None:
    """The checkpoint, then the metrics, then the snapshot's removal: until all are done, a rerun can resume."""
    save_checkpoint(checkpoint, files.out)
    write_json(files.metrics, epoch_metrics(last))  # a chunk resumed after its last epoch has not written it
    snapshots.clear(files.snapshot)


def epoch_metrics(record: dict) -> dict:
    """A chunk's metrics file after the epoch of `record`: rewritten every epoch, the last one stays."""
    return {"epoch": record["epoch"], "train_loss": record["train_loss"], "val_loss": record["val_loss"]}
