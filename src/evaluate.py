"""Stage `evaluate`: test loss of every chunk's checkpoint, and the loss curve of every branch."""

import argparse
import functools
from pathlib import Path

from chunktrain.checkpoint import (CHUNK, EPOCH, HISTORY, MODEL_CONFIG, MODEL_STATE, PARENT_SHA256, CheckpointError,
                                   file_sha256, load_checkpoint)
from chunktrain.data import read_split
from chunktrain.errors import run_stage
from chunktrain.metrics import write_history, write_json
from chunktrain.model import build_model
from chunktrain.params import load_params
from chunktrain.scoring import evaluate


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

    histories = {}
    parent_sha256 = functools.cache(file_sha256)  # branches share a parent: hash each file once
    for name, chunk in params.train.chunks.items():
        path = args.checkpoints / f"{name}.pt"
        rebuild = f"run `dvc repro train@{name}` to rebuild it"
        checkpoint = load_checkpoint(path, rebuild=rebuild)
        # A checkpoint is current only if it was trained from the parent file that is there now.
        parent_path = args.checkpoints / f"{chunk.parent}.pt"
        if checkpoint[CHUNK] != name or checkpoint[PARENT_SHA256] != parent_sha256(parent_path):
            raise CheckpointError(f"{path} is stale: it was not trained from the current {parent_path}; {rebuild}")
        model = build_model(checkpoint[MODEL_CONFIG])
        model.load_state_dict(checkpoint[MODEL_STATE])
        losses = evaluate(model, test)
        write_json(args.metrics / f"{name}.json",
                   {"epoch": checkpoint[EPOCH], "test_mse": losses["mse"], "test_mae": losses["mae"]})
        histories[name] = checkpoint[HISTORY]
        print(f"evaluate: {name} (epoch {checkpoint[EPOCH]}): test_mse {losses['mse']:.5f}"
              f"  test_mae {losses['mae']:.5f}")

    for leaf in params.train.leaves():
        write_history(args.curves / f"{leaf}.csv", histories[leaf])


if __name__ == "__main__":
    run_stage(main)
