"""Stage `synthesize`: the synthetic table, the default data.source, like any table a user brings.

Where data.source is another file, nothing reads the table: its spec says so, and the stage writes an empty one
(DVC needs the output), so an own table costs no 200,000 rows.
"""

import argparse
from pathlib import Path

import pandas

from chunktrain.data.specs import SyntheticSpec
from chunktrain.recipe.errors import run_stage
from chunktrain.data.synthetic import synthetic_table


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--spec", type=Path, required=True, help="data/plan/synthetic.json")
    parser.add_argument("--out", type=Path, required=True, help="parquet file to write")
    args = parser.parse_args(argv)
    spec = SyntheticSpec.read(args.spec)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    if spec.synthetic is None:
        pandas.DataFrame().to_parquet(args.out, index=False)
        print(f"synthesize: {args.out}: empty, data.source is another file")
        return
    frame = synthetic_table(spec.synthetic, spec.seed)
    frame.to_parquet(args.out, index=False)
    print(f"synthesize: {args.out}: {len(frame)} rows, {frame.shape[1] - 1} features")


if __name__ == "__main__":
    run_stage(main)
