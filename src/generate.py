"""Stage `generate`: write the train, val and test splits of the synthetic dataset."""

import argparse
from pathlib import Path

from chunktrain.synthetic import generate_splits
from chunktrain.errors import run_stage
from chunktrain.params import load_params


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", default="params.yaml")
    for split in ("train", "val", "test"):
        parser.add_argument(f"--{split}", type=Path, required=True, help=f"parquet file for the {split} split")
    args = parser.parse_args(argv)
    params = load_params(args.params)
    for split, frame in generate_splits(params.data, params.seed).items():
        path = getattr(args, split)
        path.parent.mkdir(parents=True, exist_ok=True)
        frame.to_parquet(path, index=False)
        print(f"generate: {path}: {len(frame)} rows")


if __name__ == "__main__":
    run_stage(main)
