"""Stage `train@<chunk>`: from the parent checkpoint (or a matching snapshot), train; write the chunk's checkpoint."""

import argparse
import os
import sys
from pathlib import Path

from chunktrain.core.checkpoint import code_id
from chunktrain.core.config import ChunkSpec, LaunchSpec, SnapshotPolicy
from chunktrain.core.errors import run_stage
from chunktrain.core.splits import read_dataset
from chunktrain.training import chunk, parallel, slurm

CODE = ("train.py", "chunktrain/__init__.py", "chunktrain/core", "chunktrain/training", "models")  # dvc.yaml's deps


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--spec", type=Path, required=True, help="data/plan/train/<chunk>.json")
    parser.add_argument("--parent", type=Path, required=True, help="checkpoint the chunk starts from")
    parser.add_argument("--dataset", type=Path, required=True, help="the dataset folder generate wrote")
    parser.add_argument("--out", type=Path, required=True, help="checkpoint to write")
    parser.add_argument("--metrics", type=Path, required=True, help="JSON file for the chunk's final losses")
    parser.add_argument("--snapshot", type=Path, required=True,
                        help="mid-chunk snapshot file, outside DVC's outputs; deleted on success")
    parser.add_argument("--snapshot-policy", type=Path, required=True,
                        help="data/plan/snapshots.json: when to write snapshots (changes no result, so no dep)")
    parser.add_argument("--launcher", choices=["local"],
                        help="run the chunk here whatever data/plan/launch/ says (how its SLURM job runs it)")
    args = parser.parse_args(argv)
    if args.launcher == "local" and "SLURM_JOB_ID" in os.environ:
        slurm.lead_signal_stops()
    spec, policy = ChunkSpec.read(args.spec), SnapshotPolicy.read(args.snapshot_policy)
    # Stage plan writes a launch spec beside the snapshot policy for each chunk run as a SLURM job; like the
    # policy, it changes no result, so no stage depends on it.
    launch_path = args.snapshot_policy.parent / "launch" / f"{spec.name}.json"
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
    world = parallel.join(spec.nproc, spec.device, f"{name}: nproc")
    files = chunk.ChunkFiles(parent=args.parent, dataset=args.dataset, out=args.out, metrics=args.metrics,
                             snapshot=args.snapshot)
    chunk.run(spec, files, world, code_id(Path(__file__).parent, *CODE), policy)


if __name__ == "__main__":
    run_stage(main)
