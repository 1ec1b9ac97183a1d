"""`make verify CHUNK=c2`: is the chunk exact on this machine? Train it again from its parent three ways, in a
temporary copy of the project, and compare each result with its checkpoint tensor by tensor.

whole: in one go. halves: stopped by SIGINT at its middle step, then resumed by a new process from the snapshot
the stop wrote. killed: SIGKILLed at a random step, then resumed from the last snapshot before it (taken every
quarter of the chunk), the steps after it trained again. Each way is `python src/train.py train@<chunk>`, as
dvc.yaml runs it, with the thread count the checkpoint was trained with.

`--steps N` trains the first N steps only: the halves and killed ways are then compared with the whole way, and
the whole way with the rounds of the checkpoint's history that end within those steps.

`python -m chunktrain.runner.verify <chunk> [--steps N]`, from the project's root; the copy goes where TMPDIR says.
"""

import argparse
import os
import random
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch

from chunktrain.evaluation import platform_words
from chunktrain.recipe.checkpoint import (DIGEST, EPOCH, HISTORY, LINEAGE, MODEL_CONFIG, MODEL_STATE,
                                          OPTIMIZER_STATE, PLATFORM, RNG_STATE, VERSION, CheckpointError,
                                          load_checkpoint)
from chunktrain.recipe.chunk import make_batches, restore
from chunktrain.recipe.errors import PipelineError, run_stage
from chunktrain.recipe.snapshot import RESUME, differences
from chunktrain.recipe.specs import ChunkSpec
from chunktrain.recipe.splits import read_dataset
from chunktrain.runner.settings import RunPlan, RunSettings
from chunktrain.runner.trainer import ChunkFiles, chunk_name

ORDER = (MODEL_STATE, OPTIMIZER_STATE, RNG_STATE, HISTORY)  # compared first, in this order; then every other key


@dataclass
class Result:
    """What one way wrote (the chunk's checkpoint, or with --steps the snapshot at the last step), or why not."""

    checkpoint: dict | None
    how: str  # where it was stopped and resumed, or the line it failed with


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m chunktrain.runner.verify", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("chunk", help="a finished chunk: its checkpoint data/checkpoints/<chunk>.pt must be there")
    parser.add_argument("--steps", type=int, help="train the chunk's first STEPS steps only")
    args = parser.parse_args(argv)
    name = chunk_name(args.chunk)
    files = ChunkFiles.of(name)
    spec = ChunkSpec.read(files.spec)
    reference = load_checkpoint(files.out, f"train@{name}")
    parent = load_checkpoint(files.parent(spec), f"train@{spec.parent}")
    total = make_batches(read_dataset(files.dataset), spec, parent[MODEL_CONFIG], torch.device("cpu")).steps \
        * spec.settings.rounds
    end = min(args.steps or total, total)
    if end < 1:
        raise PipelineError("--steps: give at least 1 step")
    recorded = reference[LINEAGE]
    print(f"verify {name}: training it again from {files.parent(spec)} three ways (steps 1..{end}"
          + (f", all of it), each compared with {files.out}" if end == total
             else f" of its {total}), each compared with {files.out}'s history and the whole way"), flush=True)
    with tempfile.TemporaryDirectory(prefix=f"verify-{name}-") as folder:
        copy = Copy(Path(folder), name, files, spec, recorded, end, total)
        first = copy.whole()
        whole = first.checkpoint
        for line in platform_lines(files.out, recorded, whole[LINEAGE] if whole else None):
            print(line, flush=True)
        results, failures = {}, 0
        for way, train in (("whole", lambda: first), ("halves", copy.halves), ("killed", copy.killed)):
            result = results[way] = train()
            said = verdict(way, result, reference, whole, files.out.name, parent[EPOCH], full=end == total)
            failures += said.startswith(("DIFFERS", "FAILED", "not compared"))
            print(f"{way + ':':8} {said}" + (f"; {result.how}" if result.checkpoint and result.how else ""),
                  flush=True)
    if failures:
        print(f"likely cause: {cause(results, reference, spec, files, parent)}")
        sys.exit(1)
    print(f"{name} is exact here: all three ways gave the bits of {files.out}" if end == total
          else f"{name}'s first {end} steps are exact here: the three ways agree bit for bit")


def platform_lines(out: Path, recorded: dict, here: dict | None) -> list[str]:
    """Where the whole way trained, against where `out` was trained; a note if other code or settings made `out`."""
    same = here and all(here.get(part) == recorded.get(part) for part in PLATFORM)
    lines = [f"platform: {platform_words(here) if here else 'unknown (the whole way failed)'};"
             + (" the checkpoint's own" if same else f" {out} was trained on {platform_words(recorded)}")]
    recipe = [part for part in differences(recorded, here) if part.split()[0] not in PLATFORM] if here else []
    if recipe and recipe != ["lineage id"]:
        lines.append(f"note: {out} was made by another {', '.join(recipe)} than the project holds now;"
                     " `dvc repro` retrains it")
    return lines


def verdict(way: str, result, reference: dict, whole: dict | None, name: str, parent_epoch: int, full: bool) -> str:
    """One way's verdict: against the checkpoint when the whole chunk was trained; for the first steps only, the whole
    way against the checkpoint's history and the other ways against the whole way."""
    if result.checkpoint is None:
        return f"FAILED: {result.how}"
    if full:
        return comparison(reference, result.checkpoint, name)
    if way == "whole":
        return history_comparison(reference, result.checkpoint, name, parent_epoch)
    return comparison(whole, result.checkpoint, "the whole way") if whole else "not compared"


class Copy:
    """The temporary copies the ways train in: the code, the specs and a run.json of this verify's own; the dataset
    and the parent checkpoint linked, read-only."""

    def __init__(self, folder: Path, name: str, files: ChunkFiles, spec: ChunkSpec, recorded: dict, end: int,
                 total: int):
        self.folder, self.name, self.files, self.spec, self.end, self.total = folder, name, files, spec, end, total
        self.threads = recorded.get("threads")
        # A checkpoint trained on a CPU is checked on the CPU, on a machine with a GPU too (train.device: auto)
        self.env = {key: value for key, value in os.environ.items() if key not in ("DVC_STAGE", "DVC_ROOT")}
        if str(recorded.get("device", "")).startswith("cpu"):
            self.env["CUDA_VISIBLE_DEVICES"] = ""

    def whole(self) -> Result:
        root = self.make("whole")
        return self.finish(root, start=0, how="")

    def halves(self) -> Result:
        if self.end < 2:
            return Result(None, "one step has no halves")
        root = self.make("halves")
        stopped = self.train(root, kill_at=self.end // 2, signal="INT")
        at = snapshot_step(root / self.files.snapshot)
        if at is None:
            return Result(None, stopped or "no snapshot written when stopped")
        return self.finish(root, start=at, how=f"stopped by SIGINT after step {at}, resumed")

    def killed(self) -> Result:
        root, every = self.make("killed"), max(1, self.end // 4)
        step = random.randint(min(every + 1, self.end), self.end)
        self.train(root, kill_at=step, every=every)  # a failure of another kind fails the resumed run too
        at = snapshot_step(root / self.files.snapshot)
        resumed = f"resumed from the snapshot of step {at}" if at else "no snapshot yet: trained again from the parent"
        return self.finish(root, start=at or 0, how=f"SIGKILL at step {step}, {resumed}")

    def finish(self, root: Path, start: int, how: str) -> Result:
        """Train from step `start` to the end; the checkpoint, or with --steps the snapshot at the last step."""
        if self.end == self.total:
            failed = self.train(root)
            out = root / self.files.out
        else:  # stopped by a kill just after the snapshot at step `end`
            failed = self.train(root, kill_at=self.end + 1 - start, every=self.end)
            out = root / self.files.snapshot
            if snapshot_step(out) != self.end:
                return Result(None, failed or "no snapshot at the last step")
        try:
            return Result(load_checkpoint(out), how)
        except CheckpointError:
            return Result(None, failed or f"{out} not written")

    def make(self, way: str) -> Path:
        root = self.folder / way
        shutil.copytree("src", root / "src", ignore=shutil.ignore_patterns("__pycache__"))
        shutil.copytree(self.files.spec.parent.parent, root / "data/plan")
        (root / "data/checkpoints").mkdir(parents=True)
        (root / self.files.dataset).symlink_to(self.files.dataset.resolve())
        parent = self.files.parent(self.spec)
        (root / parent).symlink_to(parent.resolve())
        return root

    def train(self, root: Path, kill_at: int | None = None, signal: str = "KILL", every: int | None = None
              ) -> str | None:
        """Run the chunk's stage command in `root`, with a snapshot every `every` steps and SIGKILL (or `signal`)
        at its `kill_at`-th step; None if it exited 0, else its last line."""
        settings = RunSettings(threads=self.threads, snapshot_every_steps=every, snapshot_every_seconds=None,
                               slurm=None)
        (root / self.files.run).write_text(RunPlan(chunks={self.name: settings}).text())
        env = {**self.env, "PYTHONPATH": str(root / "src")}
        if kill_at:
            env.update(CHUNKTRAIN_KILL_AT=f"step:{kill_at}", CHUNKTRAIN_KILL_SIGNAL=signal)
        run = subprocess.run([sys.executable, "src/train.py", f"train@{self.name}"], cwd=root, env=env, text=True,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        if run.returncode == 0:
            return None
        lines = [line for line in run.stdout.splitlines() if line.strip()]
        return lines[-1] if lines else f"exited with status {run.returncode}"


def snapshot_step(path: Path) -> int | None:
    """The step of the chunk a snapshot was taken at; None if there is none."""
    try:
        return load_checkpoint(path)[RESUME]["step"]
    except (CheckpointError, KeyError):
        return None


def comparison(expected: dict, actual: dict, what: str) -> str:
    """"identical to <what> (...)", or where the first tensor or value differs and by how much."""
    difference = first_difference(expected, actual)
    if difference is None:
        rounds = len(actual[HISTORY])
        return f"identical to {what} in every tensor and value ({rounds} rounds of history)"
    where, how = difference
    return f"DIFFERS from {what} at {where} ({how})"


def history_comparison(reference: dict, actual: dict, what: str, parent_rounds: int) -> str:
    """The rounds of `reference`'s history that `actual`, a chunk stopped early, completed too."""
    done = actual[HISTORY]
    if actual[EPOCH] > parent_rounds:
        difference = first_difference({HISTORY: reference[HISTORY][:len(done)]}, {HISTORY: done})
        if difference:
            return f"DIFFERS from {what} at {difference[0]} ({difference[1]})"
        return (f"identical to {what}'s first {len(done)} rounds of history, the reference the other two are"
                " compared with")
    return f"no round of {what}'s history ends within these steps: the reference the other two are compared with"


def first_difference(expected, actual, where: str = "") -> tuple[str, str] | None:
    """(the dotted name of the first value that differs, by how much), or None if every bit is the same."""
    if isinstance(expected, dict) and isinstance(actual, dict):
        keys = [*(key for key in ORDER if key in expected), *(key for key in expected if key not in ORDER),
                *(key for key in actual if key not in expected)]
        for key in keys:
            if key in (LINEAGE, VERSION, DIGEST):  # the platform and recipe are printed; the digest sums the rest
                continue
            if key not in expected or key not in actual:
                return f"{where}{key}", "missing from one of them"
            found = first_difference(expected[key], actual[key], f"{where}{key}.")
            if found:
                return found
        return None
    if isinstance(expected, (list, tuple)) and isinstance(actual, (list, tuple)):
        if len(expected) != len(actual):
            return where.rstrip("."), f"{len(expected)} items, {len(actual)} here"
        for index, (left, right) in enumerate(zip(expected, actual)):
            found = first_difference(left, right, f"{where}{index}.")
            if found:
                return found
        return None
    if isinstance(expected, torch.Tensor) and isinstance(actual, torch.Tensor):
        return tensor_difference(expected, actual, where.rstrip("."))
    if expected != actual or type(expected) is not type(actual):
        largest = (f"largest difference {abs(expected - actual):.3g}"
                   if isinstance(expected, float) and isinstance(actual, float) else f"{expected!r}, here {actual!r}")
        return where.rstrip("."), largest
    return None


def tensor_difference(expected: torch.Tensor, actual: torch.Tensor, where: str) -> tuple[str, str] | None:
    if expected.dtype != actual.dtype or expected.shape != actual.shape:
        return where, f"{expected.dtype} {list(expected.shape)}, here {actual.dtype} {list(actual.shape)}"
    left, right = (t.detach().cpu().contiguous().reshape(-1).view(torch.uint8) for t in (expected, actual))
    if torch.equal(left, right):  # bit for bit: NaNs and -0.0 included
        return None
    if expected.is_floating_point():
        largest = (expected.double() - actual.double()).abs().nan_to_num(float("inf")).max().item()
        return where, f"largest difference {largest:.3g}"
    differing = int((expected != actual).sum())
    return where, f"{differing} of {expected.numel()} values differ"


def cause(results: dict[str, Result], reference: dict, spec: ChunkSpec, files: ChunkFiles, parent: dict) -> str:
    """The likeliest reason the ways differ from the checkpoint or from each other, in one line."""
    failed = next((result.how for result in results.values() if result.checkpoint is None), None)
    if failed:
        return f"a way failed: {failed}"
    recorded = reference[LINEAGE]
    here = results["whole"].checkpoint[LINEAGE]
    if here["id"] != recorded["id"]:
        parts = differences(recorded, here)
        if any(part.split()[0] in PLATFORM for part in parts):
            return (f"{files.out} was trained on another platform: another {', '.join(parts)}; only a run on its"
                    " own platform gives its bits (docs/checkpoint.md)")
        return (f"{files.out} was made by another {', '.join(parts)} than the project holds now; run `dvc repro`"
                " first")
    draw = global_draw(spec, files, parent)
    if draw:
        return (f"the model ({parent[MODEL_CONFIG]['arch']}) draws from {draw} in forward, which no checkpoint"
                " carries; draw from torch's generator (torch.rand, torch.randn), which they do")
    if first_difference(reference, results["whole"].checkpoint) is None:
        return ("state that a checkpoint does not carry: a generator of the model's own (torch.Generator,"
                " random.Random, numpy's) or an attribute changed while training, which a resumed chunk starts"
                " without")
    return "a non-deterministic op that torch does not flag, or a draw from a generator no checkpoint carries"


def global_draw(spec: ChunkSpec, files: ChunkFiles, parent: dict) -> str | None:
    """Which global generator outside torch (Python's `random`, numpy's) one forward pass of the model draws
    from, or None."""
    import numpy

    config = parent[MODEL_CONFIG]
    model, _ = restore(parent, config, spec.settings, torch.device("cpu"))
    batches = make_batches(read_dataset(files.dataset), spec, config, torch.device("cpu"))
    x, _ = next(iter(batches.round(parent[EPOCH] + 1, 0)))
    python, generator = random.getstate(), numpy.random.get_state()
    model.train()
    with torch.no_grad():
        model(x[:2])
    if random.getstate() != python:
        return "Python's global `random`"
    now = numpy.random.get_state()
    if now[2] != generator[2] or not numpy.array_equal(now[1], generator[1]):
        return "numpy's global generator"
    return None


if __name__ == "__main__":
    run_stage(main)
