"""Stage `validate`: check params.yaml before any other stage runs, and write the marker they depend on.

Every other stage depends on the marker, so DVC runs this stage first, and a bad params.yaml stops
`dvc repro` with one line before any stage command runs or DVC deletes any output (it deletes a stage's
outputs just before running that stage). Chunk names reach shell commands and file paths through
dvc.yaml's `${key}`; this is where a name that could do harm is refused.

It also writes data/params/<chunk>.yaml, the params.yaml values each chunk reads, which the chunk's stage depends
on instead of on params.yaml keys (see chunktrain/stage_inputs.py).
"""

import argparse
from pathlib import Path

from chunktrain.errors import run_stage
from chunktrain.params import load_params_and_raw
from chunktrain.stage_inputs import write_chunk_params

MARKER = "params.yaml is valid\n"  # the same bytes whatever the params, so a new value reruns nothing through it


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--out", type=Path, required=True, help="marker file the other stages depend on")
    parser.add_argument("--chunk-params", type=Path, required=True,
                        help="folder for <chunk>.yaml: the params.yaml values that chunk's stage reads")
    args = parser.parse_args(argv)
    params, raw = load_params_and_raw(args.params)  # refuses a bad file, hostile names included, before any write
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(MARKER)
    write_chunk_params(raw, list(params.train.chunks), args.chunk_params)
    print(f"validate: {args.params}: OK")


if __name__ == "__main__":
    run_stage(main)
