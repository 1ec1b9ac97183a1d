"""Stage `train-code`: one file that changes exactly when the code a training chunk runs changes.

Every chunk depends on this digest instead of on each file src/train.py imports (see chunktrain/stage_inputs.py).
The stage lists those files as its deps (tests/test_stage_deps.py checks the list), so an edit to any of them
reruns it, and a new digest reruns every chunk.
"""

import argparse
from pathlib import Path

from chunktrain.errors import run_stage
from chunktrain.stage_inputs import code_digest


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("script", type=Path, help="the stage script whose code the digest covers")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    digest = code_digest(args.script)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(digest)
    print(f"train-code: {args.out}: {digest.count(chr(10))} files of {args.script}")


if __name__ == "__main__":
    run_stage(main)
