"""One chunk, from its parent checkpoint (or a matching snapshot) to its checkpoint and metrics.

run() is the whole story in order; each step is a small function or class below it.
"""

import contextlib
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm import tqdm

from chunktrain import resume
from chunktrain.checkpoint import (CHUNK, EPOCH, GLOBAL_STEP, HISTORY, LOSS, MODEL_STATE, OPTIMIZER_STATE, RNG_STATE,
                                   TRANSFORM, check_lineage, check_model_config, data_transform, load_checkpoint,
                                   make_checkpoint, restore_rng_state, save_checkpoint)
from chunktrain.data import Split, read_split
from chunktrain.distributed import DataParallel, World
from chunktrain.faults import crash_point
from chunktrain.metrics import epoch_metrics, write_json
from chunktrain.model import apply_settings, build_model, build_optimizer, params_config
from chunktrain.params import INIT, Params, TrainSettings
from chunktrain.schedule import Schedule
from chunktrain.signals import Interrupted, StopSignals
from chunktrain.tasks import Task, make_task
from chunktrain.training import OneProcess, Position, train_epochs

@dataclass(frozen=True)
class ChunkFiles:
    """The files a chunk stage reads and writes, as dvc.yaml passes them."""

    parent: Path  # the checkpoint it starts from
    train: Path
    val: Path
    out: Path  # the checkpoint it writes
    metrics: Path  # the JSON of its last epoch's losses
    snapshot: Path  # mid-chunk snapshot, outside DVC's outputs; deleted on success


def run(params: Params, name: str, files: ChunkFiles, world: World, code: str) -> None:
    """Train chunk `name` of params.yaml; `code` is the stage's code digest, which a snapshot's fingerprint covers.

    Only the writing process (world.writes) writes files, holding the chunk's lock: one writer per chunk.
    """
    with resume.writer_lock(files.snapshot, f"train@{name}") if world.writes else contextlib.nullcontext():
        state = prepare(params, name, files, world, code)
        train_chunk(state, params, files, world)
        if world.writes:
            write_outputs(state.checkpoint(state.position), state.position.history[-1], files)


@dataclass
class ChunkState:
    """A chunk ready to train, and what its checkpoints are made of."""

    name: str
    settings: TrainSettings
    config: dict
    train: Split
    val: Split
    parent: dict
    fingerprint: dict
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    position: Position
    steps_per_epoch: int
    task: Task

    def checkpoint(self, position: Position) -> dict:
        """The checkpoint of the chunk at `position`: the parent's history plus this chunk's epochs."""
        history = self.parent[HISTORY] + [{**record, "chunk": self.name} for record in position.history]
        steps = (position.epoch - self.parent[EPOCH] - 1) * self.steps_per_epoch + position.batch
        return make_checkpoint(self.model, self.optimizer, epoch=position.epoch - 1,
                               loss=history[-1]["train_loss"] if position.history else self.parent[LOSS],
                               model_config=self.config, chunk=self.name, train_settings=self.settings.model_dump(),
                               parent=self.parent[CHUNK], parent_sha256=self.fingerprint["parent checkpoint"],
                               global_step=self.parent[GLOBAL_STEP] + steps, history=history,
                               transform=self.parent[TRANSFORM])


def prepare(params: Params, name: str, files: ChunkFiles, world: World, code: str) -> ChunkState:
    """Read the data and the parent, and restore the model where training starts: a matching snapshot, or the parent."""
    say = print if world.writes else lambda *_: None  # the other ranks print only their errors
    settings = params.train.settings(name)
    train, val = (_on(read_split(path), world.device) for path in (files.train, files.val))
    parent, config = load_parent(files.parent, name, params, train.x.shape[1])
    fingerprint = resume.fingerprint(parent=files.parent, data=[files.train, files.val], code=code,
                                     params={"seed": params.seed, "model": config, "train": settings.model_dump(),
                                             "nproc": world.size, "device": world.device.type})
    steps_per_epoch = math.ceil(len(train.y) / settings.batch_size)
    snapshot = resume.load_snapshot(files.snapshot, fingerprint, log=say, parent=parent, epochs=settings.epochs,
                                    steps_per_epoch=steps_per_epoch)
    model, optimizer = restore(snapshot or parent, config, settings.lr, settings.weight_decay, world.device)
    position = start_position(parent, snapshot, world.device)
    if snapshot:
        say(f"resuming {name} from step {snapshot[resume.RESUME]['step']} (epoch {position.epoch})")
    say(f"train@{name}: epochs {parent[EPOCH] + 1}..{parent[EPOCH] + settings.epochs} from {files.parent},"
        f" lr {settings.lr}, batch size {settings.batch_size}"
        + (f", {world.size} processes" if world.size > 1 else ""))
    return ChunkState(name, settings, config, train, val, parent, fingerprint, model, optimizer, position,
                      steps_per_epoch, make_task(parent[TRANSFORM]))


def train_chunk(state: ChunkState, params: Params, files: ChunkFiles, world: World) -> None:
    """The loop over the chunk's epochs, with progress, live metrics, snapshots and a clean stop on a signal."""
    name, settings, parent, position = state.name, state.settings, state.parent, state.position
    where = f"chunk {list(params.train.chunks).index(name) + 1} of {len(params.train.chunks)}"
    with StopSignals() as signals, Progress(name, where, parent[EPOCH], settings.epochs, len(state.train.y),
                                            settings.batch_size, position, files.metrics,
                                            enabled=world.writes) as progress:
        launcher = resume.Launcher()

        def stop_requested() -> int | None:
            return signals.received or launcher.gone()

        parallel = OneProcess(stop_requested) if world.size == 1 else DataParallel(world, stop_requested)
        snapshots = Snapshots(name, files.snapshot, params.train, world, parallel, state.checkpoint, state.fingerprint,
                              first_epoch=parent[EPOCH] + 1, steps_per_epoch=state.steps_per_epoch)

        def on_step(position: Position, rows: int) -> None:
            progress.step(position, rows)
            snapshots.step(position)

        train_epochs(state.model, state.optimizer, state.train, state.val, position,
                     last_epoch=parent[EPOCH] + settings.epochs, batch_size=settings.batch_size, seed=params.seed,
                     task=state.task, parallel=parallel, lr=chunk_schedule(settings, parent[EPOCH]).lr,
                     on_step=on_step, on_epoch=progress.epoch)


def _on(split: Split, device: torch.device) -> Split:
    return split if device.type == "cpu" else Split(split.x.to(device), split.y.to(device))


def load_parent(path: Path, name: str, params: Params, n_features: int) -> tuple[dict, dict]:
    """The parent checkpoint and its model config, refused unless params.yaml, as it is now, would have produced it
    for data of `n_features` columns."""
    expected = params.train.chunks[name].parent
    stage = INIT if expected == INIT else f"train@{expected}"
    rebuild = f"run `dvc repro {stage}` to rebuild it"
    parent = load_checkpoint(path, rebuild=rebuild)
    config = params_config(params, n_features, data_transform(parent, path, rebuild))
    check_model_config(parent, config, path)
    is_init = expected == INIT
    check_lineage(parent, path, chunk=expected, parent=None if is_init else params.train.chunks[expected].parent,
                  settings=None if is_init else params.train.settings(expected).model_dump(), model_config=config,
                  rebuild=rebuild)
    return parent, config


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


def chunk_schedule(settings: TrainSettings, epochs_before: int) -> Schedule:
    """The lr schedule of a chunk that starts after `epochs_before` global epochs."""
    return Schedule(peak=settings.lr, **settings.schedule.model_dump(), cooldown=settings.cooldown,
                    start=epochs_before, end=epochs_before + settings.epochs)


def start_position(parent: dict, snapshot: dict | None, device: torch.device) -> Position:
    """Where training starts: the snapshot's position, else the epoch after the parent's."""
    if snapshot:
        position = resume.resume_position(snapshot, len(parent[HISTORY]))
    else:
        position = Position(epoch=parent[EPOCH] + 1)
    position.loss_sum = position.loss_sum.to(device)
    return position


class Snapshots:
    """After each step: write a snapshot when one is due or a stop was asked for, then stop if asked."""

    def __init__(self, name: str, path: Path, train_params, world: World, parallel: OneProcess, checkpoint_at,
                 fingerprint: dict, *, first_epoch: int, steps_per_epoch: int):
        self.name, self.path, self.world, self.parallel = name, path, world, parallel
        self.checkpoint_at, self.fingerprint = checkpoint_at, fingerprint
        self.first_epoch, self.steps_per_epoch = first_epoch, steps_per_epoch
        self.schedule = resume.SnapshotSchedule(train_params.snapshot_every_steps,
                                                train_params.snapshot_every_seconds)

    def step(self, position: Position) -> None:
        step = (position.epoch - self.first_epoch) * self.steps_per_epoch + position.batch  # within this chunk
        crash_point("step")
        stop = self.parallel.stop
        if self.world.writes and (stop or self.schedule.due(step)):
            taken = time.monotonic()
            try:
                resume.save_snapshot(self.path, self.checkpoint_at(position), position, step, self.fingerprint,
                                     written=save_point)
            except OSError as error:  # a full disk, a file where the folder should be: the snapshot is optional
                print(f"warning: train@{self.name}: snapshot at step {step} not written to {self.path}"
                      f" ({error.strerror or error}); training goes on", file=sys.stderr)
            self.schedule.taken(taken)
        if stop:
            self.world.barrier()  # no rank exits before the writer's snapshot is complete
            if not self.world.writes:
                sys.exit(128 + stop)
            raise Interrupted(f"train@{self.name} interrupted at step {step} (epoch {position.epoch});"
                              f" snapshot written to {self.path}: `dvc repro` resumes from it", stop)


class Progress:
    """A progress bar over the chunk's samples (on a terminal), one line per epoch, and the live metrics file.

    The metrics file is rewritten (atomically) after every epoch, so `dvc exp show` and editors that
    watch it follow a running chunk; its last content is the chunk's final metrics.
    """

    def __init__(self, name: str, where: str, epochs_before: int, epochs: int, rows: int, batch_size: int,
                 position: Position, metrics: Path, enabled: bool):
        self.name, self.metrics, self.enabled = name, metrics, enabled
        self.rows, self.last_epoch = rows, epochs_before + epochs
        done = (position.epoch - epochs_before - 1) * rows + min(position.batch * batch_size, rows)
        self.bar = tqdm(total=epochs * rows, initial=done, unit="sample", unit_scale=True, leave=False,
                        desc=f"train@{name} ({where})", disable=None if enabled else True)
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


def save_point(path: Path) -> None:
    """A crash point between writing a checkpoint's bytes and renaming them into place."""
    crash_point(f"save:{path.name}")


def write_outputs(checkpoint: dict, last: dict, files: ChunkFiles) -> None:
    """The checkpoint, then the metrics, then the snapshot's removal: until all are done, a rerun can resume."""
    save_checkpoint(checkpoint, files.out, written=save_point)
    write_json(files.metrics, epoch_metrics(last))  # a chunk resumed after its last epoch has not written it
    resume.clear(files.snapshot)
