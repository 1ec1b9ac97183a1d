"""Stage `train@<chunk>`: train the chunk here, under torchrun, or as SLURM jobs, as params.yaml's train section says.

dvc.yaml runs `python src/train.py "$DVC_STAGE"`. This decides how the chunk runs and starts the trainer
(src/chunktrain/runner/trainer.py) once per process: in this process for one process here, through torchrun for
several, through sbatch and srun for train.launcher slurm. None of this is a dependency of the stage: the chunk's
bytes depend on src/chunktrain/recipe and src/models alone.
"""

import argparse
import os
import sys
from pathlib import Path

import psutil

from chunktrain.recipe.errors import PipelineError, brief, run_stage
from chunktrain.recipe.parallel import check_nproc
from chunktrain.recipe.specs import CHUNK_NAME, INIT, ChunkSpec
from chunktrain.recipe.splits import read_dataset
from chunktrain.runner import processes, slurm, trainer

STAGE = "train@"  # dvc.yaml's stage train@<chunk>


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("stage", help="train@<chunk>, as DVC gives it in $DVC_STAGE")
    stage = parser.parse_args(argv).stage
    name = stage.removeprefix(STAGE)
    if not (stage.startswith(STAGE) and trainer.is_chunk_name(name)):
        raise PipelineError(f"stage {brief(stage)} is not train@<chunk> with a chunk name matching"
                            f" {CHUNK_NAME.pattern} and not {INIT!r}; run `dvc repro` (stage plan refuses such names)")
    files = trainer.ChunkFiles.of(name)
    spec, settings = ChunkSpec.read(files.spec), files.settings(name)
    dataset, train = read_dataset(files.dataset), spec.settings
    # A text's every step has the same batch_size x grad_accum windows; a table's last step of an epoch fewer rows.
    check_nproc(spec.nproc, train.batch_size * train.grad_accum if dataset.is_text else dataset.rows("train"), train,
                f"{stage}: nproc")
    if dataset.is_text:
        check_windows_fit(train.batch_size * train.grad_accum, spec.init.model.args["block_size"], stage)
    if processes.under_torchrun() or settings.slurm is None and spec.nproc == 1:  # this process trains
        return trainer.main([name])
    # The trainer's processes run this working copy's code (`dvc exp run --temp` runs its own).
    src = str(Path(__file__).resolve().parent)
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [src, os.environ.get("PYTHONPATH")]))
    if settings.slurm:
        return slurm.run(settings.slurm, [sys.executable, *trainer.command(name)], nproc=spec.nproc, name=stage,
                         log_dir=files.snapshot.parent, out=files.out)
    return processes.launch(spec.nproc, trainer.command(name), device=spec.device, name=stage, out=files.out)


def check_windows_fit(windows: int, block_size: int, stage: str) -> None:
    """A text's step draws `windows` windows of block_size + 1 int64 tokens, then inputs and targets of them: they
    must fit in the memory free here, else one line before any is drawn (the OS would kill the process instead)."""
    size, free = windows * (block_size + 1) * 8 * 3, psutil.virtual_memory().available
    if size > free:
        raise PipelineError(f"{stage}: train.batch_size x grad_accum is {windows:,} windows of {block_size + 1} tokens,"
                            f" {size / 2**30:,.1f} GiB a step, more than the {free / 2**30:,.1f} GiB of memory free"
                            " here; use a smaller batch_size")


if __name__ == "__main__":
    run_stage(main)
