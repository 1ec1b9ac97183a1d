"""One chunk of the recipe: the parent checkpoint (or a matching snapshot) restored, the state its checkpoints
are made of, its schedule and batches. The runner (runner/trainer.py) trains it and decides when to write what.
"""

from dataclasses import dataclass
from pathlib import Path

import torch

from chunktrain.recipe.batches import Batches, TableBatches, TextBatches
from chunktrain.recipe.checkpoint import (EPOCH, GLOBAL_STEP, HISTORY, LINEAGE, LOSS, MODEL_CONFIG, MODEL_STATE,
                                          OPTIMIZER_STATE, RNG_STATE, TRANSFORM, CheckpointError, check_lineage,
                                          code_id, lineage, load_checkpoint, make_checkpoint, restore_rng_state)
from chunktrain.recipe.errors import PipelineError
from chunktrain.recipe.loop import Position
from chunktrain.recipe.model import apply_settings, build_model, build_optimizer, check_model
from chunktrain.recipe.parallel import World
from chunktrain.recipe.schedule import Schedule
from chunktrain.recipe.snapshot import RESUME, load_snapshot, resume_position
from chunktrain.recipe.specs import INIT, ChunkSpec, TrainSettings
from chunktrain.recipe.splits import Dataset, Split, read_dataset
from chunktrain.recipe.tasks import Task, make_task

SRC = Path(__file__).resolve().parents[2]
# What decides a chunk's bytes besides its inputs, under src/: dvc.yaml's code deps of the train stages.
CODE = ("chunktrain/recipe", "models")


def recipe_id() -> str:
    """The id of the code a chunk trains with (the lineage's `code`): this package and the user's builders."""
    return code_id(SRC, *CODE)


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
        history, best = self.history(position), position.best
        if best and best[EPOCH] == position.epoch - 1 and position.batch == 0:
            # The best round is the last and no step followed it: the model's tensors themselves, which torch.save
            # writes once for both keys, so a chunk whose val loss still falls writes no bigger a file. Never in a
            # snapshot (taken after a step), whose best weights a resume keeps apart from the weights it trains.
            best = {EPOCH: best[EPOCH], MODEL_STATE: self.model.state_dict()}
        return make_checkpoint(self.model, self.optimizer, epoch=position.epoch - 1,
                               loss=history[-1]["train_loss"] if position.history else self.parent[LOSS],
                               model_config=self.parent[MODEL_CONFIG], lineage=self.lineage,
                               global_step=position.step, history=history, transform=self.parent[TRANSFORM], best=best)


def prepare(spec: ChunkSpec, parent_path: Path, dataset_path: Path, snapshot_path: Path, world: World,
            code: str) -> ChunkState:
    """Read the data and the parent, and restore the model where training starts: a matching snapshot, or the parent.

    A snapshot taken with another thread count sets this process's threads back to its own (see lineage()).
    """
    say = print if world.writes else lambda *_: None  # the other ranks print only their errors
    settings, dataset = spec.settings, read_dataset(dataset_path)
    parent = load_parent(parent_path, spec, dataset.id)
    batches = make_batches(dataset, spec, parent[MODEL_CONFIG], world.device)
    record = lineage(spec, parent[LINEAGE]["id"], dataset.id, code, world.device, world.threads)
    snapshot = load_snapshot(snapshot_path, record, log=say, parent=parent, rounds=settings.rounds,
                             steps_per_round=batches.steps)
    if snapshot and snapshot[LINEAGE]["threads"] != world.threads:
        say(f"{spec.name}: {snapshot[LINEAGE]['threads']} threads per process, as the snapshot was taken with"
            f" ({world.threads} otherwise here): a chunk keeps its thread count, which its last bits depend on")
        record = snapshot[LINEAGE]
        torch.set_num_threads(record["threads"])
    model, optimizer = restore(snapshot or parent, parent[MODEL_CONFIG], settings, world.device)
    position = start_position(parent, snapshot, world.device)
    if snapshot:
        say(f"resuming {spec.name} from step {snapshot[RESUME]['step']} of the chunk")
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
        raise PipelineError(f"the {'snapshot' if RESUME in start else 'parent checkpoint'} holds weights"
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
        position = resume_position(snapshot, len(parent[HISTORY]))
    else:
        position = Position(epoch=parent[EPOCH] + 1, step=parent[GLOBAL_STEP])
    position.loss_sum = position.loss_sum.to(device)
    return position


def round_metrics(record: dict) -> dict:
    """A chunk's metrics file after the round of `record`: rewritten every round, the last one stays."""
    return {"epoch": record["epoch"], "step": record["step"], "train_loss": record["train_loss"],
            "val_loss": record["val_loss"]}
