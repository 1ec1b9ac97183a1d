"""Predict with a chunk's checkpoint: a table in, the table with predictions out; or export the model (torch.export).

Not a DVC stage: run it on any table whose columns include the features the model was trained on.
"""

import argparse
from pathlib import Path

from chunktrain import prediction
from chunktrain.core.errors import PipelineError, run_stage
from chunktrain.data import tables


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--checkpoint", type=Path, required=True, help="data/checkpoints/<chunk>.pt")
    parser.add_argument("--input", type=Path, help="CSV or parquet table with the feature columns")
    parser.add_argument("--output", type=Path, help="CSV or parquet table to write: the input plus prediction columns")
    parser.add_argument("--export", type=Path, help=".pt2 file: the model with its transform, via torch.export")
    args = parser.parse_args(argv)
    if (args.input is None) != (args.output is None) or not (args.input or args.export):
        raise PipelineError("predict: give --input and --output, or --export, or all three")
    if args.output:
        tables.table_format(args.output, "--output")  # before any work
    if args.export and args.export.suffix != ".pt2":
        raise PipelineError(f"--export {args.export}: expected a .pt2 file")
    model = prediction.load_model(args.checkpoint)
    if args.input:
        result = prediction.predict_table(model, tables.read_table(args.input, "--input"), args.input)
        tables.write_table(result, args.output)
        print(f"predict: {args.output}: {len(result)} rows, {model.task} with {args.checkpoint}")
    if args.export:
        prediction.export(model, args.export)
        print(f"predict: {args.export}: torch.export program of {args.checkpoint}; takes float64"
              f" (rows, {len(model.features)}) columns {model.features}")


if __name__ == "__main__":
    run_stage(main)
