"""Stage `train@<chunk>`: from the parent checkpoint (or a matching snapshot), train; write the chunk's checkpoint."""

import argparse
import sys
from pathlib import Path

from chunktrain import chunk, distributed, launch
from chunktrain.data import count_rows
from chunktrain.errors import PipelineError, run_stage
from chunktrain.params import load_params_and_raw
from chunktrain.stage_inputs import check_chunk_inputs, code_digest


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--chunk", required=True, help="a key of train.chunks")
    parser.add_argument("--parent", type=Path, required=True, help="checkpoint the chunk starts from")
    parser.add_argument("--train", type=Path, required=True)
    parser.add_argument("--val", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True, help="checkpoint to write")
    parser.add_argument("--metrics", type=Path, required=True, help="JSON file for the chunk's final losses")
    parser.add_argument("--snapshot", type=Path, required=True,
                        help="mid-chunk snapshot file, outside DVC's outputs; deleted on success")
    parser.add_argument("--inputs", type=Path, nargs=2, metavar=("PARAMS_YAML", "CODE_DIGEST"),
                        help="the stage's deps data/params/<chunk>.yaml and data/code/train.sha256: checked if given")
    args = parser.parse_args(argv)

    params, raw = load_params_and_raw(args.params)
    if args.chunk not in params.train.chunks:
        raise PipelineError(f"chunk {args.chunk!r} is not in train.chunks of {args.params}")
    script = Path(__file__)
    code = code_digest(script)  # every file this stage runs: checked against its dep, and covered by snapshots
    if args.inputs:
        check_chunk_inputs(raw, args.chunk, *args.inputs, script=script, code=code)
    nproc = params.train.processes(args.chunk)
    nproc_key = "train.nproc" if params.train.chunks[args.chunk].nproc is None else f"train.chunks.{args.chunk}.nproc"
    distributed.check_nproc(nproc, count_rows(args.train), params.train.settings(args.chunk).batch_size, nproc_key)
    if nproc > 1 and not distributed.under_torchrun():
        # dvc.yaml runs plain `python src/train.py`, so `dvc exp run --temp` runs its own code: relaunch it here.
        return launch.launch(nproc, Path(__file__), sys.argv[1:] if argv is None else argv,
                             device=params.train.device, name=f"train@{args.chunk}", out=args.out)
    world = distributed.join(nproc, params.train.device, nproc_key)
    files = chunk.ChunkFiles(parent=args.parent, train=args.train, val=args.val, out=args.out, metrics=args.metrics,
                             snapshot=args.snapshot)
    chunk.run(params, args.chunk, files, world, code=code)


if __name__ == "__main__":
    run_stage(main)
