"""Stage `evaluate`: test loss of every chunk's checkpoint, the best chunk, and one loss table of the tree."""

import argparse
import functools
import math
from pathlib import Path

from chunktrain.checkpoint import (EPOCH, HISTORY, MODEL_CONFIG, MODEL_STATE, PARENT_SHA256, CheckpointError,
                                   check_lineage, data_transform, file_sha256, load_checkpoint)
from chunktrain.data import read_split
from chunktrain.errors import PipelineError, run_stage
from chunktrain.metrics import write_json, write_rows
from chunktrain.model import build_model, params_config
from chunktrain.params import load_params
from chunktrain.scoring import evaluate
from chunktrain.summary import best_chunk, tree_curves
from chunktrain.tasks import make_task


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--checkpoints", type=Path, required=True, help="folder of <chunk>.pt files")
    parser.add_argument("--test", required=True)
    parser.add_argument("--chunks", type=Path, required=True, help="JSON file: every chunk's losses and test scores")
    parser.add_argument("--best", type=Path, required=True, help="JSON file: the chunk with the lowest val_loss")
    parser.add_argument("--curves", type=Path, required=True, help="CSV file: every branch's losses and lr by epoch")
    args = parser.parse_args(argv)
    params = load_params(args.params)
    test = read_split(args.test)

    histories, scores = {}, {}
    parent_sha256 = functools.cache(file_sha256)  # branches share a parent: hash each file once
    for name in params.train.chunks:
        checkpoint, scores[name] = score_chunk(params, name, args.checkpoints, test, parent_sha256)
        histories[name] = checkpoint[HISTORY]

    write_summary(scores, args.chunks, args.best)
    write_rows(args.curves, tree_curves(params.train, histories))


def score_chunk(params, name: str, checkpoints: Path, test, parent_sha256) -> tuple[dict, dict]:
    """A chunk's checkpoint, refused unless params.yaml and its parent file there now produced it, and its scores."""
    chunk, path = params.train.chunks[name], checkpoints / f"{name}.pt"
    rebuild = f"run `dvc repro train@{name}` to rebuild it"
    checkpoint = load_checkpoint(path, rebuild=rebuild)
    transform = data_transform(checkpoint, path, rebuild)
    config = params_config(params, test.x.shape[1], transform)
    check_lineage(checkpoint, path, chunk=name, parent=chunk.parent,
                  settings=params.train.settings(name).model_dump(), model_config=config, rebuild=rebuild)
    parent_path = checkpoints / f"{chunk.parent}.pt"
    if checkpoint[PARENT_SHA256] != parent_sha256(parent_path):
        raise CheckpointError(f"{path} is stale: it was not trained from the current {parent_path}; {rebuild}")
    model = build_model(checkpoint[MODEL_CONFIG])
    model.load_state_dict(checkpoint[MODEL_STATE])
    losses = evaluate(model, test, make_task(transform))
    if not all(math.isfinite(value) for value in losses.values()):
        raise PipelineError(f"{path} gives a non-finite test loss ({next(iter(losses.values()))}); its weights"
                            f" are not finite: {rebuild}")
    scores = chunk_scores(checkpoint, losses, path)
    print(f"evaluate: {name} (epoch {checkpoint[EPOCH]}): val_loss {scores['val_loss']:.5f}  "
          + "  ".join(f"test_{metric} {value:.5f}" for metric, value in losses.items()))
    return checkpoint, scores


def chunk_scores(checkpoint: dict, losses: dict[str, float], path: Path) -> dict:
    """A chunk's line in metrics/chunks.json: where its checkpoint stands and how it scores.

    The test metrics are the task's: test_mse and test_mae, or test_cross_entropy and test_accuracy.
    """
    last = checkpoint[HISTORY][-1]  # the epoch that produced this checkpoint's weights
    return {"epoch": checkpoint[EPOCH], "train_loss": last["train_loss"], "val_loss": last["val_loss"],
            **{f"test_{metric}": value for metric, value in losses.items()}, "checkpoint": str(path)}


def write_summary(scores: dict[str, dict], chunks_path: Path, best_path: Path) -> None:
    """Every chunk's scores to `chunks_path`, the best one's (chosen on val_loss) to `best_path`."""
    write_json(chunks_path, scores)
    best = best_chunk(scores)
    write_json(best_path, {"chunk": best, **scores[best]})
    print(f"evaluate: best chunk {best} (epoch {scores[best]['epoch']}, val_loss {scores[best]['val_loss']:.5f}):"
          f" {scores[best]['checkpoint']}")


if __name__ == "__main__":
    run_stage(main)
