"""Predict with a chunk's checkpoint: a table in, the table with predictions out; or export the model (torch.export).

Not a DVC stage: run it on any table whose columns include the features the model was trained on.
"""

import argparse
from pathlib import Path

from chunktrain import prediction
from chunktrain.recipe.errors import PipelineError, run_stage
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
    # every check of what will be written before any work
    if args.output:
        tables.table_format(args.output, "--output")
        check_writable(args.output, "--output")
        if args.input.exists() and args.output.exists() and args.output.samefile(args.input):
            raise PipelineError(f"--output {args.output} is the --input file; write the predictions to another file")
    if args.export:
        if args.export.suffix != ".pt2":
            raise PipelineError(f"--export {args.export}: expected a .pt2 file")
        check_writable(args.export, "--export")
    model = prediction.load_model(args.checkpoint)
    if model.trained:
        print(f"predict: {args.checkpoint}: the weights of its best round, epoch {model.trained['epoch']}"
              f" (val_loss {model.trained['val_loss']:.5f})")
    if args.input:
        result = prediction.predict_table(model, tables.read_table(args.input, "--input"), args.input)
        tables.write_table(result, args.output)
        print(f"predict: {args.output}: {len(result)} rows, {model.task} with {args.checkpoint}")
    if args.export:
        try:
            prediction.export(model, args.export)
        except (OSError, RuntimeError) as error:  # torch's writer reports a failed write as a RuntimeError
            raise PipelineError(f"--export {args.export} cannot be written ({' '.join(str(error).split())[:200]})"
                                ) from None
        print(f"predict: {args.export}: torch.export program of {args.checkpoint}; takes float64"
              f" (rows, {len(model.features)}) columns {model.features}")


def check_writable(path: Path, what: str) -> None:
    """Refuse a folder as the file to write (a write that fails later is one line where it happens)."""
    if path.is_dir():
        raise PipelineError(f"{what} {path} is a folder; give a file name")


if __name__ == "__main__":
    run_stage(main)
