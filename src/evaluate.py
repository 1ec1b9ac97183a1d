"""Stage `evaluate`: test metrics of every chunk's checkpoint, the best chunk, and one loss table of the tree.

Each chunk is scored with its best round's weights (the lowest val loss of its rounds, recipe/checkpoint.py's BEST).
A text has no test split: its chunks are scored on that val loss alone.
"""

import argparse
import math
from pathlib import Path

from chunktrain.recipe.checkpoint import (GLOBAL_STEP, HISTORY, LINEAGE, TRANSFORM, CheckpointError, check_lineage,
                                          load_checkpoint)
from chunktrain.recipe.specs import INIT, ChunkSpec, EvaluateSpec
from chunktrain.recipe.errors import PipelineError, run_stage
from chunktrain.recipe.files import write_json, write_rows
from chunktrain.recipe.model import load_trained
from chunktrain.recipe.splits import read_dataset
from chunktrain.recipe.tasks import evaluate, make_task
from chunktrain.evaluation import CURVE_COLUMNS, best_chunk, chunk_scores, tree_curves


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--spec", type=Path, required=True, help="data/plan/evaluate.json")
    parser.add_argument("--checkpoints", type=Path, required=True, help="folder of <chunk>.pt files")
    parser.add_argument("--dataset", type=Path, required=True, help="the dataset folder generate wrote")
    parser.add_argument("--chunks", type=Path, required=True, help="JSON file: every chunk's losses and test scores")
    parser.add_argument("--best", type=Path, required=True, help="JSON file: the chunk with the lowest val_loss")
    parser.add_argument("--curves", type=Path, required=True, help="CSV file: every branch's losses by round and lr by step")
    args = parser.parse_args(argv)
    spec, dataset = EvaluateSpec.read(args.spec), read_dataset(args.dataset)
    test = None if dataset.is_text else dataset.split("test")

    checkpoints = {INIT: load_checkpoint(args.checkpoints / f"{INIT}.pt", INIT)}
    check_lineage(checkpoints[INIT], args.checkpoints / f"{INIT}.pt", chunk=INIT, spec=spec.init,
                  dataset_id=dataset.id, stage=INIT)

    def current(name: str) -> dict:  # a chunk's checkpoint, loaded once its parent's is
        if name not in checkpoints:
            chunk = spec.chunks[name]
            checkpoints[name] = load_current(args.checkpoints / f"{name}.pt", chunk, current(chunk.parent), dataset.id)
        return checkpoints[name]

    scores = {name: score(current(name), args.checkpoints / f"{name}.pt", test) for name in spec.chunks}

    write_summary(scores, args.chunks, args.best)
    histories = {name: checkpoints[name][HISTORY] for name in spec.chunks}
    write_rows(args.curves, tree_curves(spec.leaves(), histories, spec.chunks), CURVE_COLUMNS)


def load_current(path: Path, spec: ChunkSpec, parent: dict, dataset_id: str) -> dict:
    """A chunk's checkpoint, refused unless its spec made it on this dataset from the parent checkpoint there now."""
    stage = f"train@{spec.name}"
    checkpoint = load_checkpoint(path, stage)
    check_lineage(checkpoint, path, chunk=spec.name, spec=spec, dataset_id=dataset_id, stage=stage)
    if checkpoint[LINEAGE]["parent"] != parent[LINEAGE]["id"]:
        raise CheckpointError(path, f"is stale: it was not trained from the current {spec.parent}.pt", stage)
    return checkpoint


def score(checkpoint: dict, path: Path, test) -> dict:
    """A chunk's scores: its best round's losses and the task's metrics on the test split, if there is one."""
    losses, name = {}, checkpoint[LINEAGE]["chunk"]
    if test is not None:
        losses = evaluate(load_trained(checkpoint, path, f"train@{name}"), test, make_task(checkpoint[TRANSFORM]))
    if not all(math.isfinite(value) for value in losses.values()):
        raise PipelineError(f"{path} gives a non-finite test loss ({next(iter(losses.values()))}); its weights"
                            f" are not finite: run `dvc repro train@{name}` to rebuild it")
    scores = chunk_scores(checkpoint, losses, path)
    print(f"evaluate: {name} (best round at step {scores['step']} of {checkpoint[GLOBAL_STEP]}):"
          f" val_loss {scores['val_loss']:.5f}  "
          + "  ".join(f"test_{metric} {value:.5f}" for metric, value in losses.items()))
    return scores


def write_summary(scores: dict[str, dict], chunks_path: Path, best_path: Path) -> None:
    """Every chunk's scores to `chunks_path`, the best one's (chosen on val_loss) to `best_path`."""
    write_json(chunks_path, scores)
    best = best_chunk(scores)
    # dvc metrics show's columns: the platform, a long string, is chunks.json's alone
    write_json(best_path, {"chunk": best, **{key: value for key, value in scores[best].items() if key != "platform"}})
    print(f"evaluate: best chunk {best} (step {scores[best]['step']}, val_loss {scores[best]['val_loss']:.5f}):"
          f" {scores[best]['checkpoint']}")


if __name__ == "__main__":
    run_stage(main)
