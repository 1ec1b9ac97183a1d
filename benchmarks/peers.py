"""The project against the tools a user would pick instead, each timed in turn with its peer in this run.

- nanogpt: nanoGPT's CPU recipe for character-level Shakespeare through `dvc repro` (docs/params-gpt.yaml: 4 chunks
  of 500 steps, then evaluate) against nanoGPT's own train.py (vendored in benchmarks/peers/nanogpt, MIT licence)
  with the same recipe, both with torch.compile off, at the same thread count. Also where the project's time goes:
  each stage's wall time, and inside one chunk stage its start and imports, loading, steps, val losses and save.
- lightning: `dvc repro -f` of init and 3 chunks of 2 epochs (an MLP 16-128-128-1, Adam, batch 128, 50,000 rows)
  against 3 Lightning processes, each resuming the previous one's checkpoint (benchmarks/peers/lightning_chunk.py).
- stage: one chunk stage against a plain loop (bench.py's `stage` figure).

Prints the three ratios with both times and writes metrics/bench_peers.json; --steps N (nanogpt scaled to N steps),
--short (smaller workloads, one run each) and --only NAME (one of the three) print without writing.
"""

import argparse
import contextlib
import io
import json
import re
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

from bench import PYTHON, ROOT, figure, machine, print_table, stage_vs_plain, timed_dvc, wall
from gpt import CORPUS, recipe_params

from chunktrain.runner import processes  # noqa: E402
from chunktrain.testing import new_project  # noqa: E402

PEERS = ROOT / "benchmarks/peers"
NANOGPT_FILES = ("train.py", "model.py", "configurator.py", "config/train_shakespeare_char.py")
RECIPE_STEPS = 2000


def nanogpt_folder(work: Path, corpus: Path) -> Path:
    """nanoGPT's files and its data/shakespeare_char as its prepare.py writes it: the characters of the text, sorted,
    as uint16 ids; the first 90% train, the rest val."""
    import pickle

    import numpy as np

    folder = work / "nanogpt"
    for name in NANOGPT_FILES:
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(PEERS / "nanogpt" / name, folder / name)
    data, text = folder / "data/shakespeare_char", corpus.read_text()
    data.mkdir(parents=True)
    chars = sorted(set(text))
    ids = {char: index for index, char in enumerate(chars)}
    cut = int(len(text) * 0.9)
    for name, part in (("train", text[:cut]), ("val", text[cut:])):
        np.array([ids[char] for char in part], dtype=np.uint16).tofile(data / f"{name}.bin")
    with open(data / "meta.pkl", "wb") as meta:
        pickle.dump({"vocab_size": len(chars), "itos": dict(enumerate(chars)), "stoi": ids}, meta)
    return folder


def nanogpt_command(steps: int, compile: bool = False) -> list[str]:
    """nanoGPT's README command for a CPU, scaled to `steps` as recipe_params scales ours."""
    scale = steps / RECIPE_STEPS
    return [PYTHON, "train.py", "config/train_shakespeare_char.py", "--device=cpu", f"--compile={compile}",
            "--eval_iters=20", f"--log_interval={steps}", "--block_size=64", "--batch_size=12", "--n_layer=4",
            "--n_head=4", "--n_embd=128", f"--max_iters={steps}", f"--lr_decay_iters={steps}", "--dropout=0.0",
            f"--warmup_iters={int(100 * scale)}", f"--eval_interval={int(250 * scale)}"]


def gpt_project(root: Path, corpus: Path, steps: int):
    """docs/params-gpt.yaml scaled to `steps` on the corpus, as a git repo for `dvc repro`."""
    params = recipe_params(steps)
    del params["train"]["chunks"]["whole"]
    project = new_project(root, params)
    (root / "data").mkdir(exist_ok=True)
    shutil.copyfile(corpus, root / "data/text.txt")
    return project


STAGE_TIME = re.compile(r"^  (\S+) +(.+) s$", re.MULTILINE)


def seconds(text: str) -> float:
    """src/run.py's duration ("12.3", "1 min 05") in seconds."""
    minutes, _, rest = text.rpartition(" min ")
    return float(minutes or 0) * 60 + float(rest)


def nanogpt(work: Path, corpus: Path, steps: int, repeats: int, threads: int) -> tuple[dict, dict[str, float]]:
    """The recipe through `dvc repro` (src/run.py: it also times each stage) against nanoGPT's train.py, in turn."""
    env = {"OMP_NUM_THREADS": str(threads)}
    peer = nanogpt_folder(work, corpus)
    ours, theirs, stages, losses = [], [], {}, {}
    for repeat in range(repeats):
        project = gpt_project(work / f"gpt{repeat}", corpus, steps)

        def run_ours():
            took, output = wall([PYTHON, "src/run.py"], cwd=project.path, env=env)
            ours.append(took)
            for name, text in STAGE_TIME.findall(output):
                stages.setdefault(name, []).append(seconds(text))
            losses["ours"] = json.loads((project.path / "metrics/train/c4.json").read_text())["val_loss"]

        def run_theirs():
            took, output = wall(nanogpt_command(steps), cwd=peer, env=env)
            theirs.append(took)
            losses["nanogpt"] = float(re.findall(r"val loss (\d+\.\d+)", output)[-1])

        for run in (run_ours, run_theirs) if repeat % 2 == 0 else (run_theirs, run_ours):
            run()
        shutil.rmtree(project.path)
    value, baseline = statistics.median(ours), statistics.median(theirs)
    row = figure("GPT recipe vs nanoGPT train.py", value, baseline, "s", "<= 0.9", value / baseline <= 0.9,
                 f"{steps} steps as 4 chunks through dvc repro (src/run.py), generate and evaluate included, against"
                 f" nanoGPT's train.py, compile off, {threads} thread(s) each (OMP_NUM_THREADS); val loss at the last"
                 f" step (20 batches): ours {losses['ours']:.4f}, nanoGPT {losses['nanogpt']:.4f}; median of"
                 f" {repeats} each, in turn (ours {', '.join(f'{t:.1f}' for t in ours)} s; nanoGPT"
                 f" {', '.join(f'{t:.1f}' for t in theirs)} s)")
    return row, {name: statistics.median(times) for name, times in stages.items()}


def inside_a_chunk(work: Path, corpus: Path, steps: int, threads: int) -> dict[str, float]:
    """Where one chunk stage's time goes: the recipe's c2 (steps / 4 steps), its phases timed in this process as
    the trainer runs them; the process start and imports timed as their own processes."""
    import torch

    from chunktrain.recipe.batches import TextBatches
    from chunktrain.recipe.chunk import prepare, recipe_id
    from chunktrain.recipe.specs import ChunkSpec
    from chunktrain.runner import trainer

    project = gpt_project(work / "phases", corpus, steps)
    env = {"OMP_NUM_THREADS": str(threads)}
    times = {"python start": wall([PYTHON, "-c", "pass"])[0],
             "imports": wall([PYTHON, "-c", "import chunktrain.runner.trainer"], env=env)[0]}
    with contextlib.redirect_stdout(io.StringIO()):
        project.generate()
        project.init()
        project.train("c1")
    val_loss, spent = TextBatches.val_loss, {"val losses": 0.0}

    def timed(name, function):
        def wrapper(*args, **kwargs):
            started = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                spent[name] += time.perf_counter() - started
        return wrapper

    previous = torch.get_num_threads()
    try:
        TextBatches.val_loss = timed("val losses", val_loss)
        with contextlib.chdir(project.path), contextlib.redirect_stdout(io.StringIO()):
            files = trainer.ChunkFiles.of("c2")
            spec, settings = ChunkSpec.read(files.spec), files.settings("c2")
            started = time.perf_counter()
            world = processes.join(1, "cpu", "nproc", threads)
            state = prepare(spec, files.parent(spec), files.dataset, files.snapshot, world, recipe_id())
            times["load the parent and data"] = time.perf_counter() - started
            started = time.perf_counter()
            trainer.train(state, files, world, settings, trainer.StopSignals())
            times["steps"] = time.perf_counter() - started - spent["val losses"]
            times["val losses"] = spent["val losses"]
            started = time.perf_counter()
            trainer.write_outputs(state, files)
            times["save"] = time.perf_counter() - started
    finally:
        TextBatches.val_loss = val_loss
        torch.set_num_threads(previous)
    return times


def lightning(work: Path, n_samples: int, repeats: int) -> dict:
    """`dvc repro -f` of init and 3 chunks of 2 epochs against 3 Lightning processes resuming one another."""
    from bench import pipeline_params

    threads = processes.available_cpus()
    env = {"OMP_NUM_THREADS": str(threads)}
    project = new_project(work / "lightning", pipeline_params(n_samples, 3, 2))
    project.dvc("repro", "generate")
    ours, theirs = [], []

    def run_ours():
        ours.append(timed_dvc(project, "repro", "-f", "-s", "init", "train@c1", "train@c2", "train@c3", env=env)[0])

    def run_theirs():
        started = time.perf_counter()
        for chunk in range(1, 4):
            wall([PYTHON, str(PEERS / "lightning_chunk.py"), "--dataset", str(project.dataset),
                  "--epochs", str(2 * chunk), "--out", str(work / f"l{chunk}.ckpt"),
                  *(["--resume", str(work / f"l{chunk - 1}.ckpt")] if chunk > 1 else [])], env=env)
        theirs.append(time.perf_counter() - started)

    for repeat in range(repeats):
        for run in (run_ours, run_theirs) if repeat % 2 == 0 else (run_theirs, run_ours):
            run()
    value, baseline = statistics.median(ours), statistics.median(theirs)
    return figure("3 chunks vs Lightning resuming", value, baseline, "s", "<= 0.9", value / baseline <= 0.9,
                  f"dvc repro -f of init and 3 chunks of 2 epochs, {int(n_samples * 0.8):,} rows, MLP 16-128-128-1,"
                  f" Adam, batch 128, {threads} thread(s); against 3 Lightning processes, each resuming the last one's"
                  f" checkpoint; median of {repeats} each, in turn (ours {', '.join(f'{t:.1f}' for t in ours)} s;"
                  f" Lightning {', '.join(f'{t:.1f}' for t in theirs)} s)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=ROOT / "metrics/bench_peers.json")
    parser.add_argument("--corpus", type=Path, default=CORPUS, help="tiny Shakespeare (default: %(default)s)")
    parser.add_argument("--steps", type=int, default=RECIPE_STEPS, help="the GPT recipe scaled to this many steps")
    parser.add_argument("--threads", type=int, default=1, help="OMP_NUM_THREADS of both GPT runs")
    parser.add_argument("--short", action="store_true", help="small workloads, one run each; prints, writes nothing")
    parser.add_argument("--only", choices=["nanogpt", "lightning", "stage"], help="this one alone; writes nothing")
    args = parser.parse_args()
    if not args.corpus.is_file():
        sys.exit(f"error: --corpus {args.corpus}: no such file (tiny Shakespeare; see benchmarks/README.md)")
    steps = min(args.steps, 200) if args.short else args.steps
    repeats = 1 if args.short else 2
    rows, stages, phases = [], {}, {}
    with tempfile.TemporaryDirectory(prefix="chunktrain-peers-") as work:
        work = Path(work)
        if args.only in (None, "nanogpt"):
            gpt, stages = nanogpt(work, args.corpus, steps, repeats, args.threads)
            phases = inside_a_chunk(work, args.corpus, steps, args.threads)
            rows.append(gpt)
        if args.only in (None, "lightning"):
            rows.append(lightning(work, 12_500 if args.short else 62_500, repeats))
        if args.only in (None, "stage"):
            rows.append(stage_vs_plain(work, 20_000 if args.short else 80_000, repeats=repeats))
    print_table(rows)
    if stages:
        print("\nwall time of each stage of the GPT recipe (src/run.py's table, median):")
        for name, took in stages.items():
            print(f"  {name:<12}{took:>8.1f} s")
        print(f"inside one chunk stage of {steps // 4} steps:")
        for name, took in phases.items():
            print(f"  {name:<28}{took:>8.2f} s")
    if args.short or args.only or args.steps != RECIPE_STEPS:
        return
    result = {"command": " ".join(["python benchmarks/peers.py", *sys.argv[1:]]), "machine": machine(),
              "figures": rows, "gpt_stages": stages, "gpt_chunk_phases": phases}
    args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
