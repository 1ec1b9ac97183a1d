"""Stage `generate`: the source table (synthetic or data.source) -> train, val and test splits and their transform."""

import argparse
import json
from pathlib import Path

from chunktrain.dataset import make_splits
from chunktrain.errors import run_stage
from chunktrain.params import load_params


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", default="params.yaml")
    for split in ("train", "val", "test"):
        parser.add_argument(f"--{split}", type=Path, required=True, help=f"parquet file for the {split} split")
    parser.add_argument("--transform", type=Path, required=True,
                        help="JSON file: the train split's feature statistics and the target's scale or labels")
    args = parser.parse_args(argv)
    params = load_params(args.params)
    splits, transform = make_splits(params.data, params.model.task, params.seed)  # every check before any write
    for split, frame in splits.items():
        path = getattr(args, split)
        path.parent.mkdir(parents=True, exist_ok=True)
        frame.to_parquet(path, index=False)
        print(f"generate: {path}: {len(frame)} rows")
    args.transform.parent.mkdir(parents=True, exist_ok=True)
    args.transform.write_text(json.dumps(transform, indent=1) + "\n")
    classes = f", {len(transform['labels'])} classes" if transform["labels"] else ""
    print(f"generate: {args.transform}: {len(transform['features'])} features{classes}")


if __name__ == "__main__":
    run_stage(main)
