"""train.compile on the GPT recipe (docs/params-gpt.yaml): what torch.compile costs and gains, on this machine.

- steps: ms per training step of the recipe's model, eager and compiled, each in a fresh process; the compiled
  process's first step with inductor's on-disk cache empty (cold: it compiles) and again in a new process on the
  same cache (warm: what every chunk after a project's first pays);
- recipe: the wall time of the 4 chunk stages (`python src/train.py`), eager and with train.compile, and the first
  compiled chunk's extra seconds over the eager one;
- nanoGPT: its train.py with --compile=True on the same text, steps and model, its own cache cold.
Every process gets the same OMP_NUM_THREADS (--threads, default 1).
"""

import argparse
import json
import os
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

from bench import PYTHON, ROOT, stage_process  # puts src/ on sys.path
from gpt import CHUNKS, CORPUS, recipe_params, stage_env, text_project, timed
from peers import nanogpt_command, nanogpt_folder

PROBE_STEPS = 30


def probe(compiled: bool, steps: int, vocab: int = 65) -> dict:
    """In this process: the recipe's model (for `vocab` tokens; 65: tiny Shakespeare's characters), optimizer and
    training step (loop.train_step) on random windows; the first step's seconds and the mean ms of the others."""
    import contextlib

    import torch

    from chunktrain.params import load_params
    from chunktrain.recipe.loop import OneProcess, train_step
    from chunktrain.recipe.model import apply_settings, build_model, build_optimizer
    from chunktrain.recipe.tasks import LanguageModel

    params = load_params(ROOT / "docs/params-gpt.yaml")
    settings = params.train.settings("c1")
    args = params.model.args
    config = {"arch": "gpt", "args": args, "inputs": vocab, "outputs": vocab, "optimizer": "adamw",
              "decay_params": params.train.decay_params}
    torch.use_deterministic_algorithms(True)  # as processes.deterministic() sets it for a chunk
    torch.manual_seed(0)
    model = build_model(config)
    optimizer = build_optimizer(model, config)
    apply_settings(optimizer, settings.lr, settings.weight_decay, settings.betas)
    trained = torch.compile(model) if compiled else model
    generator = torch.Generator().manual_seed(1)
    loss_sum, times = torch.zeros((), dtype=torch.float64), []
    for _ in range(steps):
        x = torch.randint(vocab, (settings.batch_size, args["block_size"] + 1), generator=generator)
        started = time.perf_counter()
        train_step(trained, optimizer, x[:, :-1], x[:, 1:], settings, LanguageModel(), OneProcess(),
                   contextlib.nullcontext(), loss_sum)
        times.append(time.perf_counter() - started)
    return {"first_s": times[0], "ms_per_step": 1000 * statistics.mean(times[1:])}


def probe_process(compiled: bool, cache: Path, env: dict) -> dict:
    """probe() in a fresh process, with inductor's caches in `cache`."""
    _, _, output = timed([PYTHON, __file__, "--probe", "compiled" if compiled else "eager"],
                         {**env, "TORCHINDUCTOR_CACHE_DIR": str(cache)})
    return json.loads(output.strip().splitlines()[-1])


def recipe_wall(work: Path, corpus: Path, steps: int, compiled: bool, env: dict) -> list[float]:
    """Seconds of each of the recipe's chunk stages, c1 to c4 in turn, in a project of its own (its cache cold)."""
    params = recipe_params(steps)
    params["train"]["compile"] = compiled
    params["train"]["chunks"].pop("whole")
    project = text_project(work / ("compiled" if compiled else "eager"), corpus, params)
    return [timed(stage_process(f"train@c{index}"), env, cwd=project.root)[0] for index in range(1, CHUNKS + 1)]


def nanogpt(work: Path, corpus: Path, steps: int, env: dict) -> dict:
    """nanoGPT's train.py, --compile=True, on its CPU recipe for `steps` iterations: wall seconds, the ms of its iter
    0 (which compiles) and the median ms of the rest, as it logs them."""
    folder = nanogpt_folder(work, corpus)
    command = [*nanogpt_command(steps, compile=True), "--log_interval=1"]
    seconds, _, output = timed(command, {**env, "TORCHINDUCTOR_CACHE_DIR": str(work / "nanogpt-cache")}, cwd=folder)
    times = [float(ms) for ms in re.findall(r"^iter \d+: loss [\d.]+, time ([\d.]+)ms", output, re.MULTILINE)]
    return {"seconds": seconds, "first_ms": times[0], "ms_per_step": statistics.median(times[1:])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus", type=Path, default=CORPUS)
    parser.add_argument("--steps", type=int, default=2000, help="the recipe's length (2000: as shipped)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--probe", choices=["eager", "compiled"], help=argparse.SUPPRESS)  # probe_process's child
    args = parser.parse_args()
    if args.probe:
        print(json.dumps(probe(args.probe == "compiled", PROBE_STEPS)))
        return
    env = stage_env(args.threads)
    with tempfile.TemporaryDirectory(prefix="chunktrain-compile-") as folder:
        work = Path(folder)
        eager = probe_process(False, work / "probe-cache", env)
        cold = probe_process(True, work / "probe-cache", env)
        warm = probe_process(True, work / "probe-cache", env)
        print(f"steps: {time.strftime('%X')}", file=sys.stderr, flush=True)
        chunks = {compiled: recipe_wall(work, args.corpus, args.steps, compiled, env) for compiled in (False, True)}
        print(f"recipe: {time.strftime('%X')}", file=sys.stderr, flush=True)
        peer = nanogpt(work, args.corpus, args.steps, env)
    rows = [
        ("ms per step (mean of steps 2..30)", f"{eager['ms_per_step']:.1f}", f"{warm['ms_per_step']:.1f}"),
        ("first step, cache cold (s)", f"{eager['first_s']:.2f}", f"{cold['first_s']:.2f}"),
        ("first step, cache warm, new process (s)", f"{eager['first_s']:.2f}", f"{warm['first_s']:.2f}"),
        (f"recipe: {CHUNKS} chunk stages of {args.steps // CHUNKS} steps (s)", f"{sum(chunks[False]):.1f}",
         f"{sum(chunks[True]):.1f}"),
        ("recipe: each chunk stage (s)", " ".join(f"{s:.0f}" for s in chunks[False]),
         " ".join(f"{s:.0f}" for s in chunks[True])),
        ("recipe: c1's compile cost (s)", "-", f"{chunks[True][0] - chunks[False][0]:.1f}"),
    ]
    rows += [(f"nanoGPT train.py --compile=True, {args.steps} iters (s)", "-", f"{peer['seconds']:.1f}"),
             ("nanoGPT: iter 0 / median iter (ms)", "-", f"{peer['first_ms']:.0f} / {peer['ms_per_step']:.1f}")]
    print(f"\nOMP_NUM_THREADS={args.threads}, torch threads of every process; {os.cpu_count()} CPUs")
    print(f"{'':<50}{'eager':>16}{'compiled':>20}")
    for name, left, right in rows:
        print(f"{name:<50}{left:>16}{right:>20}")


if __name__ == "__main__":
    main()
