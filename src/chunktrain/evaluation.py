"""What evaluate reports over the whole chunk tree: each chunk's scores, the best chunk, and the curves of every
branch (metrics/curves.csv, the data of dvc.yaml's loss and lr charts)."""

import itertools
import math

from chunktrain.recipe.checkpoint import LINEAGE, TRANSFORM, best_round
from chunktrain.recipe.chunk import chunk_schedule
from chunktrain.recipe.schedule import step_span
from chunktrain.recipe.specs import ChunkSpec
from chunktrain.recipe.splits import is_text


def chunk_scores(checkpoint: dict, losses: dict[str, float], path) -> dict:
    """A chunk's line in metrics/chunks.json: its best round (the weights evaluate scores) and how it scores.

    The test metrics are the task's: test_mse and test_mae, or test_cross_entropy and test_accuracy (none
    for a text, which has no test split).
    """
    best = best_round(checkpoint)[0]
    epoch = {} if is_text(checkpoint[TRANSFORM]) else {"epoch": best["epoch"]}  # a text counts steps alone
    return {**epoch, "step": best["step"], "train_loss": best["train_loss"], "val_loss": best["val_loss"],
            **{f"test_{metric}": value for metric, value in losses.items()}, "checkpoint": str(path),
            "platform": platform_words(checkpoint[LINEAGE])}


def platform_words(lineage: dict) -> str:
    """Where a checkpoint was trained, from its lineage record (recipe/checkpoint.py's platform()), in words."""
    threads = lineage.get("threads")
    return (f"torch {lineage.get('torch')}, {lineage.get('device')}, {threads} thread{'' if threads == 1 else 's'}"
            f" per process, deterministic algorithms {'on' if lineage.get('deterministic') else 'off'}")


def best_chunk(scores: dict[str, dict]) -> str:
    """The chunk whose best round has the lowest val_loss; on a tie, the one with fewer steps.

    Chosen on the validation split only: the test split stays an unbiased estimate of the chosen checkpoint.
    """
    return min(scores, key=lambda name: (scores[name]["val_loss"], scores[name]["step"]))


# Of metrics/curves.csv and metrics/live.csv: a row per branch and step kept. The losses are a round's, on its last
# step and empty elsewhere; `loss` names the task's loss for the chart's y title.
CURVE_COLUMNS = ["branch", "chunk", "step", "epoch", "train_loss", "val_loss", "lr", "loss"]
LOSS_NAMES = {"regression": "MSE in the target's units", "classification": "cross-entropy (nats)",
              "language_model": "cross-entropy per token (nats)"}
STEPS_KEPT = 200  # a chunk's steps on the lr chart at most, besides each round's ends and the schedule's turns


def tree_curves(leaves: list[str], histories: dict[str, list[dict]], specs: dict[str, ChunkSpec]) -> list[dict]:
    """The rows of every branch, for one chart of the tree: the whole lineage of each, its lr step by step.

    A branch is named after its last chunk (a leaf); branches repeat the rounds they share, so each is one line.
    `specs` holds the spec of every chunk in the histories: the lr of each step is its schedule's, computed as
    the loop does (the checkpoints record only each round's last).
    """
    return [row for leaf in leaves for row in branch_curve(leaf, histories[leaf], specs)]


def branch_curve(branch: str, history: list[dict], specs: dict[str, ChunkSpec]) -> list[dict]:
    """One branch's rows: each chunk's steps kept (see kept_steps), a round's losses on its last step."""
    rows, before = [], {"epoch": 0, "step": 0}  # where the init checkpoint stands
    for chunk, records in itertools.groupby(history, key=lambda record: record["chunk"]):
        records, spec = list(records), specs[chunk]
        per_round = records[0]["step"] - before["step"]  # a chunk's rounds are all as long
        lr, loss = chunk_schedule(spec, before["epoch"]), LOSS_NAMES[spec.init.model.task]
        for record in records:
            first = record["step"] - per_round  # the global step before the round
            for batch in kept_steps(spec, record["epoch"], per_round):
                last = batch == per_round - 1
                rows.append({"branch": branch, "chunk": chunk, "step": first + batch + 1, "epoch": record["epoch"],
                             "train_loss": record["train_loss"] if last else "",
                             "val_loss": record["val_loss"] if last else "",
                             "lr": lr(*step_span(record["epoch"], batch, per_round)), "loss": loss})
        before = records[-1]
    return rows


def kept_steps(spec: ChunkSpec, epoch: int, per_round: int) -> list[int]:
    """The batches of global round `epoch` whose lr the chart draws: all of a short chunk's, else one in every
    few (STEPS_KEPT a chunk), the round's first and last, and the steps around a turn of the schedule
    (the warmup's end, the decay's), so that straight lines between them are its exact shape or close to it."""
    settings = spec.settings
    stride = math.ceil(settings.rounds * per_round / STEPS_KEPT)
    unit = settings.eval_every if settings.steps else 1  # the schedule counts epochs, or a text's steps
    turns = [at / unit for at in (settings.schedule.warmup, settings.schedule.total) if at]  # in rounds
    kept = {0, per_round - 1} | set(range(0, per_round, stride))
    for turn in turns:
        if epoch - 1 < turn <= epoch:
            batch = math.ceil((turn - (epoch - 1)) * per_round) - 1  # the step that reaches it, give or take
            kept |= {near for near in (batch - 1, batch, batch + 1) if 0 <= near < per_round}  # a float's last bit
    return sorted(kept)
