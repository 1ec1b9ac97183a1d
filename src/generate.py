"""Stage `generate`: data.source -> train, val and test splits, and dataset.json (their transform and id)."""

import argparse
from pathlib import Path

from chunktrain.core.config import DataSpec
from chunktrain.core.errors import run_stage
from chunktrain.data.dataset import make_splits, write_dataset


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--spec", type=Path, required=True, help="data/plan/data.json")
    for split in ("train", "val", "test"):
        parser.add_argument(f"--{split}", type=Path, required=True, help=f"parquet file for the {split} split")
    parser.add_argument("--dataset", type=Path, required=True,
                        help="JSON file: the dataset's id and transform (feature statistics, the target's scale or"
                             " labels)")
    args = parser.parse_args(argv)
    spec = DataSpec.read(args.spec)
    splits, transform = make_splits(spec.data, spec.task, spec.seed)  # every check before any write
    dataset_id = write_dataset(splits, transform, {split: getattr(args, split) for split in splits}, args.dataset)
    for split, frame in splits.items():
        print(f"generate: {getattr(args, split)}: {len(frame)} rows")
    classes = f", {len(transform['labels'])} classes" if transform["labels"] else ""
    print(f"generate: {args.dataset}: {len(transform['features'])} features{classes}, id {dataset_id[:12]}")


if __name__ == "__main__":
    run_stage(main)
