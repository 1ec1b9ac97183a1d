"""Stage `train@<chunk>`: from the parent checkpoint (or a matching snapshot), train; write the chunk's checkpoint."""

import argparse
import os
import sys
from pathlib import Path

from chunktrain.core.checkpoint import code_id
from chunktrain.core.config import CHUNK_NAME, INIT, ChunkSpec, LaunchSpec, Runtime
from chunktrain.core.errors import PipelineError, brief, run_stage
from chunktrain.core.splits import read_dataset
from chunktrain.training import chunk, parallel, slurm

CODE = ("train.py", "chunktrain/__init__.py", "chunktrain/core", "chunktrain/training", "models")  # dvc.yaml's deps
STAGE = "train@"  # dvc.yaml's stage train@<chunk>


def stage_files(stage: str) -> dict[str, Path]:
    """The files of stage train@<chunk> as dvc.yaml's deps and outs name them, once the name is known to be safe.

    dvc.yaml passes the stage's name in $DVC_STAGE rather than ${key}, so no chunk name reaches a shell, whatever
    DVC flag skips stage plan (-s, --downstream, -f, --ignore-errors).
    """
    name = stage.removeprefix(STAGE)
    if not (stage.startswith(STAGE) and CHUNK_NAME.fullmatch(name) and name != INIT):
        raise PipelineError(f"stage {brief(stage)} is not train@<chunk> with a chunk name matching"
                            f" {CHUNK_NAME.pattern} and not {INIT!r}; run `dvc repro` (stage plan refuses such"
                            " names)")
    return {"spec": Path(f"data/plan/train/{name}.json"), "out": Path(f"data/checkpoints/{name}.pt"),
            "metrics": Path(f"metrics/train/{name}.json"), "snapshot": Path(f".resume/{name}/snapshot.pt")}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--stage", help="train@<chunk>, as DVC gives it in $DVC_STAGE: the chunk's spec, parent,"
                                        " out, metrics and snapshot are then dvc.yaml's (stage_files)")
    parser.add_argument("--spec", type=Path, help="data/plan/train/<chunk>.json")
    parser.add_argument("--parent", type=Path,
                        help="checkpoint the chunk starts from; default: the spec's parent beside --out")
    parser.add_argument("--dataset", type=Path, required=True, help="the dataset folder generate wrote")
    parser.add_argument("--out", type=Path, help="checkpoint to write")
    parser.add_argument("--metrics", type=Path, help="JSON file for the chunk's final losses")
    parser.add_argument("--snapshot", type=Path,
                        help="mid-chunk snapshot file, outside DVC's outputs; deleted on success")
    parser.add_argument("--runtime", type=Path, required=True,
                        help="data/plan/runtime.json: snapshots and threads (they change no result, so no dep)")
    parser.add_argument("--curves", type=Path,
                        help="the charts' CSV (evaluate's output), rewritten after every round with this chunk so far")
    parser.add_argument("--launcher", choices=["local"],
                        help="run the chunk here whatever data/plan/launch/ says (how its SLURM job runs it)")
    args = parser.parse_args(argv)
    if args.stage is not None:
        vars(args).update(stage_files(args.stage))
    if missing := [f"--{key}" for key in ("spec", "out", "metrics", "snapshot") if getattr(args, key) is None]:
        parser.error(f"--stage, or {', '.join(missing)}, is required")
    if args.launcher == "local" and "SLURM_JOB_ID" in os.environ:
        slurm.lead_signal_stops()
    spec, runtime = ChunkSpec.read(args.spec), Runtime.read(args.runtime)
    if args.parent is None:
        args.parent = args.out.with_name(f"{spec.parent}.pt")
    # Stage plan writes a launch spec beside runtime.json for each chunk run as a SLURM job; like runtime.json, it
    # changes no result, so no stage depends on it.
    launch_path = args.runtime.parent / "launch" / f"{spec.name}.json"
    name = f"train@{spec.name}"
    settings, dataset = spec.settings, read_dataset(args.dataset)
    # A text's every step has the same batch_size x grad_accum windows; a table's last step of an epoch fewer rows.
    rows = settings.batch_size * settings.grad_accum if dataset.is_text else dataset.rows("train")
    parallel.check_nproc(spec.nproc, rows, settings, f"{name}: nproc")
    if args.launcher is None and launch_path.exists():
        command = [sys.executable, str(Path(__file__).resolve()), *(sys.argv[1:] if argv is None else argv),
                   "--launcher", "local"]
        return slurm.run(LaunchSpec.read(launch_path).slurm, command, name=name, log_dir=args.snapshot.parent,
                         out=args.out)
    if spec.nproc > 1 and not parallel.under_torchrun():
        # dvc.yaml runs plain `python src/train.py`, so `dvc exp run --temp` runs its own code: relaunch it here.
        return parallel.launch(spec.nproc, Path(__file__), sys.argv[1:] if argv is None else argv,
                               device=spec.device, name=name, out=args.out)
    world = parallel.join(spec.nproc, spec.device, f"{name}: nproc", runtime.threads)
    files = chunk.ChunkFiles(parent=args.parent, dataset=args.dataset, out=args.out, metrics=args.metrics,
                             snapshot=args.snapshot, curves=args.curves)
    chunk.run(spec, files, world, code_id(Path(__file__).parent, *CODE), runtime)


if __name__ == "__main__":
    run_stage(main)
