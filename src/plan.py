"""Stage `plan`: validate params.yaml and write the spec each stage reads (data/plan/), before any other stage runs.

Every other stage depends on its spec, so a bad params.yaml stops `dvc repro` here, with one line, before any
other stage's command runs and before DVC deletes any other stage's output. Chunk names reach shell commands and
file paths through dvc.yaml's `${key}`; this is where a name that could do harm is refused. Without --out, it only
checks.
"""

import argparse
import shutil
from pathlib import Path

from chunktrain.params import load_params, plan
from chunktrain.recipe.errors import run_stage
from chunktrain.recipe.specs import INIT


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--out", type=Path, help="folder for the specs, emptied first")
    parser.add_argument("--checkpoints", type=Path, help="data/checkpoints: note a checkpoint no chunk plans")
    args = parser.parse_args(argv)
    params = load_params(args.params)  # refuses a bad file, hostile names included, before any write
    params.data.source_files(Path(args.params).parent)  # the repo's root
    params.model.pretrained_files(Path(args.params).parent)
    specs = plan(params)
    if args.out:
        shutil.rmtree(args.out, ignore_errors=True)  # a removed chunk leaves no spec behind
        for name, spec in specs.items():
            (args.out / name).parent.mkdir(parents=True, exist_ok=True)
            (args.out / name).write_text(spec.text())
    print(f"plan: {args.params}: OK" + (f", {len(specs)} specs in {args.out}" if args.out else ""))
    for path in unplanned(args.checkpoints, params.train.chunks) if args.checkpoints else []:
        print(f"plan: note: {path} is the checkpoint of chunk {path.stem}, which params.yaml no longer has; DVC"
              f" keeps it and its dvc.lock entry: `rm {path}` if you removed the chunk for good")


def unplanned(folder: Path, chunks) -> list[Path]:
    """Checkpoints in `folder` of chunks that params.yaml no longer has. DVC deletes no output of a stage that is
    gone from dvc.yaml, and evaluate's dep is the whole folder, so such a file stays, and counts, until deleted."""
    return sorted(path for path in folder.glob("*.pt") if path.stem != INIT and path.stem not in chunks)


if __name__ == "__main__":
    run_stage(main)
