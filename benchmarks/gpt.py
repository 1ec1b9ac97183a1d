"""nanoGPT's CPU recipe for character-level Shakespeare as 4 chunks of 500 steps, against what nanoGPT reports and
against a plain loop timed in the same run; and the training stage's peak memory against the corpus's size.

The recipe: the val loss after 2000 steps, against nanoGPT's 1.88 and plain_gpt.py's after the same steps; the
tokens/s of each chunk stage, a `python src/train.py` process from start to end, against plain_gpt.py's process
doing the same steps, in turn; the wall time of the 4 chunks against one 2000-step chunk, whose checkpoint must
hold the same weights bit for bit.
Memory: the peak RSS of a 50-step chunk on a 1 MB corpus and on a 200 MB one, both made up (testing.tiny_text).
Writes metrics/bench_gpt.json after a run of the whole recipe; a shorter run (--steps) only prints.
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

import torch
import yaml
from bench import (PYTHON, ROOT, TIMEOUT, figure, machine, print_table, quiet_project,  # puts src/ on sys.path
                   stage_process)
from plain_gpt import RECIPE

from chunktrain.recipe import checkpoint as ckpt  # noqa: E402
from chunktrain.recipe.model import build_model  # noqa: E402
from chunktrain.recipe.splits import read_dataset  # noqa: E402
from chunktrain.recipe.tasks import make_task  # noqa: E402
from chunktrain.recipe.batches import TextBatches  # noqa: E402
from chunktrain.testing import (Project, assert_same_state, losses, measured, new_project,  # noqa: E402
                                project_env, tiny_text)

CORPUS = ROOT.parent / "shared/data/tinyshakespeare.txt"
SHIPPED = ROOT / "docs/params-gpt.yaml"  # the recipe as a user copies it over params.yaml
NANOGPT_VAL_LOSS = 1.88  # nanoGPT's README, after the recipe's 2000 iterations
STEADY_BATCHES = 200  # nanoGPT's default eval_iters: a steadier estimate than the recipe's 20 batches
CHUNKS = 4
MEMORY_STEPS = 50
MEMORY_SIZES = (1, 200)  # MB of text
RSS_TARGET = 50  # MB: what the big corpus may add to the small one's peak


def recipe_params(steps: int) -> dict:
    """docs/params-gpt.yaml (nanoGPT's recipe as a user copies it) scaled to `steps` (2000: as shipped), on the CPU,
    on data/text.txt, with a chunk `whole` that does all c1..c4 do at once."""
    params = yaml.safe_load(SHIPPED.read_text())
    train = params["train"]
    chunks = train["chunks"]
    assert list(chunks) == [f"c{i}" for i in range(1, CHUNKS + 1)], f"{SHIPPED}: expected {CHUNKS} chunks c1.."
    assert sum(chunk["steps"] for chunk in chunks.values()) == train["schedule"]["total"] == RECIPE["total"]
    scale = steps / RECIPE["total"]
    params["data"]["source"] = "data/text.txt"
    params["synthetic"] = {"n_samples": 10, "n_features": 1, "noise": 0.1}  # Project.generate runs synthesize too
    train["device"] = "cpu"  # as the plain loop
    train["eval_every"] = int(train["eval_every"] * scale)
    train["schedule"] = {**train["schedule"], "warmup": int(train["schedule"]["warmup"] * scale), "total": steps}
    train["chunks"] = {**{name: {**chunk, "steps": int(chunk["steps"] * scale)} for name, chunk in chunks.items()},
                       "whole": {"from": "init", "steps": steps}}
    return params


def text_project(root: Path, corpus: Path, params: dict) -> Project:
    """A project folder with the dataset of `corpus` (copied in as data/text.txt: a source must lie inside the repo)
    and the init checkpoint."""
    (root / "data").mkdir(parents=True)
    shutil.copyfile(corpus, root / "data/text.txt")
    return quiet_project(root, params)


def timed(command: list[str], env: dict, cwd: Path = ROOT) -> tuple[float, int, str]:
    """Seconds a process takes from start to end, its peak RSS in bytes, and its output; fails loudly."""
    return measured(command, cwd=cwd, env=env, timeout=TIMEOUT)


def stage_env(threads: int | None) -> dict:
    env = dict(project_env(), PYTHONPATH=str(ROOT / "src"))
    return {**env, "OMP_NUM_THREADS": str(threads)} if threads else env


def recipe(work: Path, corpus: Path, steps: int, threads: int | None = None) -> dict:
    """c1..c4 as stage processes, each beside plain_gpt.py doing the same steps (which goes first alternates),
    then `whole` and plain_gpt.py doing all the steps; the raw results."""
    params = recipe_params(steps)
    project = text_project(work / "recipe", corpus, params)
    env, chunk = stage_env(threads), steps // CHUNKS
    train = params["train"]
    tokens = chunk * train["batch_size"] * RECIPE["block_size"]  # trained on by each process
    stage, plain = [], []  # one run per chunk each

    def run_stage(index: int) -> dict:
        seconds, _, output = timed(stage_process(f"train@c{index + 1}"), env, cwd=project.root)
        return {"seconds": seconds, "tokens_per_s": tokens / seconds, "in_loop": in_loop_rates(output)}

    def run_plain(index: int, length: int = chunk, weights: Path | None = None) -> dict:
        seconds, _, output = timed([PYTHON, str(ROOT / "benchmarks/plain_gpt.py"), "--dataset", str(project.dataset),
                                    "--first", str(index * chunk), "--steps", str(length),
                                    "--warmup", str(train["schedule"]["warmup"]), "--total", str(steps),
                                    "--eval-every", str(train["eval_every"]),
                                    *(["--weights", str(weights)] if weights else [])], env)
        result = json.loads(output.splitlines()[-1])
        return {"seconds": seconds, "tokens_per_s": tokens * length / chunk / seconds,
                "in_loop": result["tokens_per_s"], "val_loss": result["val_losses"][-1]}

    for index in range(CHUNKS):
        pair = [lambda: stage.append(run_stage(index)), lambda: plain.append(run_plain(index))]
        for run in pair if index % 2 == 0 else pair[::-1]:
            run()
    whole_seconds = timed(stage_process("train@whole"), env, cwd=project.root)[0]
    # The recipe written plainly, all at once: its val loss, measured as a chunk's is, sets the bar beside nanoGPT's.
    plain_whole = run_plain(0, steps, work / "plain.pt")
    chunked, whole = (ckpt.load_checkpoint(project.checkpoint(name)) for name in (f"c{CHUNKS}", "whole"))
    first = ckpt.load_checkpoint(project.checkpoint("c1"))[ckpt.HISTORY][-1]["val_loss"]
    plain_state = torch.load(work / "plain.pt", weights_only=True)
    return {"steps": steps, "tokens": tokens, "stage": stage, "plain": plain, "whole_seconds": whole_seconds,
            "plain_whole_seconds": plain_whole["seconds"], "first_val_loss": first,
            "val_loss": chunked[ckpt.HISTORY][-1]["val_loss"], "whole_val_loss": whole[ckpt.HISTORY][-1]["val_loss"],
            "val_losses": {name: {count: seeded_val_loss(chunked, state, project.dataset, count, params["seed"])
                                  for count in (train["eval_batches"], STEADY_BATCHES)}
                           for name, state in (("chunks", chunked[ckpt.MODEL_STATE]), ("plain", plain_state))},
            "difference": difference(chunked, whole), "eval_every": train["eval_every"], "threads": threads}


def seeded_val_loss(checkpoint: dict, state: dict, dataset: Path, count: int, seed: int) -> float:
    """The val loss of the weights `state` (of checkpoint's model) on the chunks' first `count` seeded val batches."""
    model = build_model(checkpoint[ckpt.MODEL_CONFIG])
    model.load_state_dict(state)
    model.eval()
    data = read_dataset(dataset)
    batches = TextBatches(data.split("train"), data.split("val"), windows=RECIPE["batch_size"],
                          block_size=RECIPE["block_size"], steps=1, eval_batches=count,
                          eval_windows=RECIPE["batch_size"], seed=seed, device=torch.device("cpu"))
    with torch.no_grad():
        return batches.val_loss(model, make_task(checkpoint[ckpt.TRANSFORM]))


def in_loop_rates(output: str) -> list[float]:
    """tokens/s of each round, from the stage's progress lines ("train@c1 step 250: ... 1,234 windows/s")."""
    rates = re.findall(r"^train@\S+ step \d+: .* ([\d,]+) windows/s(?:, \S+ left)?$", output, re.MULTILINE)
    return [float(rate.replace(",", "")) * RECIPE["block_size"] for rate in rates]


def difference(a: dict, b: dict) -> str | None:
    """What differs between two checkpoints' weights, optimizer and RNG states and loss histories; None: nothing."""
    try:
        assert_same_state(a, b)
    except AssertionError as error:
        return f"state {error}"
    return None if losses(a) == losses(b) else "loss history"


def recipe_figures(result: dict) -> list[dict]:
    steps, stage, plain = result["steps"], result["stage"], result["plain"]
    chunk = steps // CHUNKS
    stage_rate, plain_rate = (statistics.median(run["tokens_per_s"] for run in runs) for runs in (stage, plain))
    # A plain process's first round pays torch's one-off import of torch._dynamo (at its first optimizer step; the
    # stage pays it before its loop, as it builds the model), so the rounds after each process's first are compared.
    loop_stage, loop_plain = (statistics.median(rate for run in runs for rate in run["in_loop"][1:] or run["in_loop"])
                              for runs in (stage, plain))
    pairs = ", ".join(f"{a['tokens_per_s'] / b['tokens_per_s']:.3f}" for a, b in zip(stage, plain))
    whole_rate, plain_whole_rate = (result["tokens"] * CHUNKS / result[key]
                                    for key in ("whole_seconds", "plain_whole_seconds"))
    (few, chunks_few), (many, chunks_many) = result["val_losses"]["chunks"].items()
    plain_few, plain_many = result["val_losses"]["plain"].values()
    chunked = sum(run["seconds"] for run in stage)
    same = result["difference"] is None
    length = "" if steps == RECIPE["total"] else f" (the recipe is {RECIPE['total']} steps)"
    threads = f"; OMP_NUM_THREADS={result['threads']}" if result["threads"] else ""
    return [
        figure(f"GPT val loss at step {steps}", result["val_loss"], NANOGPT_VAL_LOSS, "nats", "<= 1.88",
               result["val_loss"] <= NANOGPT_VAL_LOSS,
               f"c{CHUNKS}'s last val loss, on {few} seeded val batches of {RECIPE['batch_size']} windows;"
               f" baseline: nanoGPT's README{length}"),
        figure(f"GPT val loss at step {steps} vs plain", chunks_many, plain_many, "nats", "-", True,
               f"on {many} seeded val batches (the first {few} are c{CHUNKS}'s own); baseline: plain_gpt.py's weights"
               f" after the {steps} steps in one process, its own random windows and nanoGPT's warmup; on the {few}"
               f" batches: {chunks_few:.4f} and {plain_few:.4f}. After {chunk} steps from the same init weights, on"
               f" {few} batches (the plain loop's random ones): c1 {result['first_val_loss']:.4f}, the plain loop"
               f" {plain[0]['val_loss']:.4f}"),
        figure("GPT chunk stage throughput", stage_rate, plain_rate, "tokens/s", ">= 0.95",
               stage_rate / plain_rate >= 0.95,
               f"{chunk} steps x {result['tokens'] // chunk:,} tokens per process, from start to end: `python"
               f" src/train.py` (load the parent, train in rounds of {result['eval_every']} steps each ended by a val"
               f" loss, save) against plain_gpt.py (build, train, the same val losses); median of {CHUNKS} each, in"
               f" turn (each chunk's ratio to its plain run: {pairs}). In the loop, median of the rounds after each"
               f" process's first: stage {loop_stage:,.0f}, plain {loop_plain:,.0f} tokens/s"
               f" ({loop_stage / loop_plain:.3f}). All {steps} steps in one process: the chunk `whole`"
               f" {whole_rate:,.0f}, plain_gpt.py {plain_whole_rate:,.0f} tokens/s"
               f" ({whole_rate / plain_whole_rate:.3f}){threads}"),
        figure(f"{CHUNKS} chunks of {chunk} steps vs 1 of {steps}", chunked, result["whole_seconds"], "s",
               "same weights", same,
               f"wall time of the {CHUNKS} stage processes in all against `whole`'s; checkpoints c{CHUNKS} and whole:"
               + (" model, AdamW state, RNG state and loss history bit-identical" if same else
                  f" DIFFER ({result['difference']})")
               + f"; val loss {result['val_loss']:.6f} and {result['whole_val_loss']:.6f}"),
    ]


def memory(work: Path, threads: int | None = None, sizes: tuple[int, ...] = MEMORY_SIZES) -> dict:
    """Per corpus size in MB (tiny_text's 1 MB repeated): generate's and a 50-step chunk's seconds and peak RSS."""
    params = recipe_params(RECIPE["total"])
    params["train"] = {**params["train"], "eval_every": MEMORY_STEPS,
                       "chunks": {"c1": {"from": "init", "steps": MEMORY_STEPS}}}
    megabyte, env, result = tiny_text(1_000_000), stage_env(threads), {}
    for size in sizes:
        project = new_project(work / f"memory-{size}", params, git=False)
        (project.root / "data").mkdir()
        with open(project.root / "data/text.txt", "w") as text:
            for _ in range(size):
                text.write(megabyte)
        with contextlib.redirect_stdout(io.StringIO()):
            project.plan()
        generate = timed(stage_process("generate"), env, cwd=project.root)
        with contextlib.redirect_stdout(io.StringIO()):
            project.init()
        train = timed(stage_process("train@c1"), env, cwd=project.root)
        result[size] = {"generate_seconds": generate[0], "generate_rss": generate[1], "train_seconds": train[0],
                        "train_rss": train[1]}
        shutil.rmtree(project.root)  # 600 MB at 200 MB of text
    return result


def memory_figures(result: dict) -> list[dict]:
    small, big = sorted(result)
    mb = {size: {key: value / 1e6 if key.endswith("rss") else value for key, value in run.items()}
          for size, run in result.items()}
    grown = mb[big]["train_rss"] - mb[small]["train_rss"]
    return [
        figure(f"peak RSS of a chunk stage, {big} MB corpus", mb[big]["train_rss"], mb[small]["train_rss"], "MB",
               f"<= +{RSS_TARGET} MB", grown <= RSS_TARGET,
               f"{MEMORY_STEPS} steps of the recipe's GPT and a val loss, `python src/train.py` (peak RSS from"
               f" wait4); baseline: the same on {small} MB; {grown:+.1f} MB; {mb[big]['train_seconds']:.1f} s and"
               f" {mb[small]['train_seconds']:.1f} s"),
        figure(f"peak RSS of generate, {big} MB corpus", mb[big]["generate_rss"], mb[small]["generate_rss"], "MB",
               "-", True,
               f"`python src/generate.py` on the same texts: {mb[big]['generate_seconds']:.1f} s and"
               f" {mb[small]['generate_seconds']:.1f} s; the text is tiny_text's 1 MB repeated"),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus", type=Path, default=CORPUS,
                        help="tiny Shakespeare, 1.1 MB (default: ../shared/data/tinyshakespeare.txt beside the repo)")
    parser.add_argument("--steps", type=int, default=RECIPE["total"],
                        help="the recipe's length; chunks, warmup, decay and eval_every scale with it (a multiple of"
                             f" {2 * CHUNKS})")
    parser.add_argument("--threads", type=int, help="OMP_NUM_THREADS of every timed process (default: torch's own)")
    parser.add_argument("--no-memory", action="store_true", help="leave out the memory figures (600 MB of temp files)")
    parser.add_argument("--out", type=Path, default=ROOT / "metrics/bench_gpt.json")
    args = parser.parse_args()
    if not args.corpus.is_file():
        parser.error(f"no corpus at {args.corpus}: the recipe trains on tiny Shakespeare (1.1 MB, public domain,"
                     " nanoGPT's data/shakespeare_char); give its path with --corpus (make bench GPT='--corpus PATH')")
    if args.steps <= 0 or args.steps % (2 * CHUNKS):
        parser.error(f"--steps {args.steps}: must be a positive multiple of {2 * CHUNKS} ({CHUNKS} chunks of 2 rounds)")
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="chunktrain-gpt-") as work:
        rows = recipe_figures(recipe(Path(work), args.corpus, args.steps, args.threads))
        print(f"recipe: {time.perf_counter() - started:.0f} s", file=sys.stderr, flush=True)
        if not args.no_memory:
            rows += memory_figures(memory(Path(work), args.threads))
    print_table(rows)
    if args.steps != RECIPE["total"] or args.no_memory:  # metrics/bench_gpt.json keeps the last whole run
        return
    command = " ".join(["python benchmarks/gpt.py", *sys.argv[1:]])
    args.out.write_text(json.dumps({"command": command, "machine": machine(), "minutes":
                                    round((time.perf_counter() - started) / 60, 1), "figures": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
