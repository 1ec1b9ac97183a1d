"""A mid-chunk snapshot: the chunk's checkpoint at a position inside the chunk plus that position, and what it must
match to be resumed from, so that a resumed chunk gives the bytes of an uninterrupted one.

A snapshot's lineage is the one the finished chunk will carry, and it is used only by a run of the same lineage
(parent, spec, dataset, code, and platform: device, torch version, deterministic algorithms), its thread count
aside. When a chunk is taken and how snapshots are listed and cleared is the runner's (runner/snapshots.py).
"""

from collections.abc import Callable
from pathlib import Path

import torch

from chunktrain.recipe.checkpoint import (BEST, EPOCH, GLOBAL_STEP, HISTORY, LINEAGE, PLATFORM, CheckpointError,
                                          lineage_id, load_checkpoint, save_checkpoint)
from chunktrain.recipe.errors import brief
from chunktrain.recipe.loop import Position

RESUME = "resume"  # snapshots only: {epoch, batch, loss_sum, step}


def save_snapshot(path: Path, checkpoint: dict, position: Position, step: int) -> None:
    """Write checkpoint + position over the previous snapshot, atomically."""
    save_checkpoint({**checkpoint, RESUME: {"epoch": position.epoch, "batch": position.batch,
                                            "loss_sum": position.loss_sum, "step": step}}, path)


def load_snapshot(path: Path, lineage: dict, log: Callable[[str], None], *, parent: dict, rounds: int,
                  steps_per_round: int) -> dict | None:
    """The snapshot at `path` if it is readable, was taken on the way to `lineage` and stands inside the chunk
    that continues `parent` for `rounds` rounds (epochs, or a text's eval_every steps); else None, and `log`
    says why.

    A snapshot taken with another thread count than `lineage` names is still used: the chunk goes on with the
    threads it started with (its lineage, which the caller takes from the snapshot), as a job resubmitted to a
    node of another size must.
    """
    if not path.is_file():
        return None
    try:
        snapshot = load_checkpoint(path)
        if not isinstance(snapshot.get(RESUME), dict):
            raise KeyError(f"no {RESUME!r} position: a checkpoint, not a snapshot")
    except (CheckpointError, KeyError) as error:
        log(f"warning: skipping corrupt snapshot {path}: {str(error)[:200]}")
        return None
    saved = snapshot[LINEAGE]
    threads = saved.get("threads")
    same_but_threads = type(threads) is int and lineage_id({**lineage, "threads": threads}) == saved.get("id")
    if saved.get("id") != lineage["id"] and not same_but_threads:
        log(f"skipping snapshot {path}: it was taken with another {', '.join(differences(saved, lineage))}")
        return None
    problem = position_problem(snapshot, parent, rounds, steps_per_round)
    if problem:
        log(f"warning: skipping snapshot {path}: {problem}")
        return None
    return snapshot


def differences(saved: dict, lineage: dict) -> list[str]:
    """The parts of a lineage record `saved` that differ from `lineage`, a platform's with both values (another
    torch (2.12.0 there, 2.13.0 here)); threads aside, which a resumed chunk takes from its snapshot."""
    return [part + (f" ({brief(saved.get(part))} there, {brief(lineage[part])} here)" if part in PLATFORM else "")
            for part in lineage if part not in ("id", "threads") and saved.get(part) != lineage[part]] or ["lineage id"]


def position_problem(snapshot: dict, parent: dict, rounds: int, steps_per_round: int) -> str | None:
    """What makes a snapshot's position impossible for the chunk it claims to continue, or None."""
    state, first = snapshot[RESUME], parent[EPOCH] + 1
    epoch, batch, step, loss_sum = (state.get(key) for key in ("epoch", "batch", "step", "loss_sum"))
    if not all(type(value) is int for value in (epoch, batch, step)):
        return "its position is not a whole number of rounds, batches and steps"
    if not first <= epoch <= parent[EPOCH] + rounds or not 0 <= batch <= steps_per_round:
        return (f"its position (round {epoch}, batch {batch}) is outside the chunk (rounds {first}.."
                f"{parent[EPOCH] + rounds}, {steps_per_round} batches each)")
    if (step != (epoch - first) * steps_per_round + batch or snapshot[EPOCH] != epoch - 1
            or snapshot[GLOBAL_STEP] != parent[GLOBAL_STEP] + step):
        return f"its step {step} and round {snapshot[EPOCH]} disagree with its position (round {epoch}, batch {batch})"
    if len(snapshot[HISTORY]) != len(parent[HISTORY]) + epoch - first:
        return f"its history has {len(snapshot[HISTORY])} rounds, not the {parent[EPOCH] + epoch - first} it should"
    if not isinstance(loss_sum, torch.Tensor) or loss_sum.shape != () or loss_sum.dtype != torch.float64:
        return "its running loss is not a float64 scalar"
    return None


def resume_position(snapshot: dict, parent_history_length: int) -> Position:
    """The position a snapshot was taken at, with the chunk's completed rounds and its best one."""
    state = snapshot[RESUME]
    return Position(epoch=state["epoch"], step=snapshot[GLOBAL_STEP], batch=state["batch"],
                    loss_sum=state["loss_sum"].clone(), history=snapshot[HISTORY][parent_history_length:],
                    best=snapshot[BEST])
