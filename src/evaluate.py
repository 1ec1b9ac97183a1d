"""Stage `evaluate`: test loss of every chunk's checkpoint, and the loss curve of every branch."""

import argparse
import functools
import math
from pathlib import Path

from chunktrain.checkpoint import (EPOCH, HISTORY, MODEL_CONFIG, MODEL_STATE, PARENT_SHA256, CheckpointError,
                                   check_lineage, file_sha256, load_checkpoint)
from chunktrain.data import read_split
from chunktrain.errors import PipelineError, run_stage
from chunktrain.metrics import write_history, write_json
from chunktrain.model import build_model, model_config
from chunktrain.params import load_params
from chunktrain.training import evaluate


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--checkpoints", type=Path, required=True, help="folder of <chunk>.pt files")
    parser.add_argument("--test", required=True)
    parser.add_argument("--metrics", type=Path, required=True, help="folder for one <chunk>.json of test losses each")
    parser.add_argument("--curves", type=Path, required=True, help="folder for one loss curve CSV per branch")
    args = parser.parse_args(argv)
    params = load_params(args.params)
    test = read_split(args.test)
    config = model_config(test.x.shape[1], params.model.hidden, params.train.optimizer)

    histories = {}
    parent_sha256 = functools.cache(file_sha256)  # branches share a parent: hash each file once
    for name, chunk in params.train.chunks.items():
        path = args.checkpoints / f"{name}.pt"
        rebuild = f"run `dvc repro train@{name}` to rebuild it"
        checkpoint = load_checkpoint(path, rebuild=rebuild)
        # A checkpoint counts only if params.yaml, as it is now, would have produced it from the parent file there now.
        check_lineage(checkpoint, path, chunk=name, parent=chunk.parent,
                      settings=params.train.settings(name).model_dump(), model_config=config, rebuild=rebuild)
        parent_path = args.checkpoints / f"{chunk.parent}.pt"
        if checkpoint[PARENT_SHA256] != parent_sha256(parent_path):
            raise CheckpointError(f"{path} is stale: it was not trained from the current {parent_path}; {rebuild}")
        model = build_model(checkpoint[MODEL_CONFIG])
        model.load_state_dict(checkpoint[MODEL_STATE])
        losses = evaluate(model, test)
        if not all(math.isfinite(value) for value in losses.values()):
            raise PipelineError(f"{path} gives a non-finite test loss ({losses['mse']}); its weights are not finite:"
                                f" {rebuild}")
        write_json(args.metrics / f"{name}.json",
                   {"epoch": checkpoint[EPOCH], "test_mse": losses["mse"], "test_mae": losses["mae"]})
        histories[name] = checkpoint[HISTORY]
        print(f"evaluate: {name} (epoch {checkpoint[EPOCH]}): test_mse {losses['mse']:.5f}"
              f"  test_mae {losses['mae']:.5f}")

    for leaf in params.train.leaves():
        write_history(args.curves / f"{leaf}.csv", histories[leaf])


if __name__ == "__main__":
    run_stage(main)
