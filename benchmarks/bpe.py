"""Tokenizers on tiny Shakespeare at the same model size and wall time: the character recipe (docs/params-gpt.yaml,
its 2000 steps as one chunk) against byte-level BPE at a few vocabulary sizes, each learnt by stage generate from the
train split. Only the token embedding, which the output layer shares, grows with the vocabulary; block_size stays 64
tokens, so a BPE model sees more characters of context.

The budget is the time the character recipe's steps take: a BPE model trains for as many steps as fit in it at its
own speed, steps x (the character model's ms per step) / (its ms per step). Those speeds come from compile.py's probe
(the recipe's training step on random windows, in this process), every vocabulary in turn, PROBE_ROUNDS times, the
median of each. A chunk's warmup is the recipe's and its cosine ends at its own last step. Each variant is a project
of its own: generate, init, then the chunk as dvc.yaml's command in a process of its own, timed from start to end.

The val loss is over the whole val split (the text's last 10%), in windows of block_size tokens that tile it, so that
every val token but the first is predicted once: in nats per token, and in bits per character (nats per token x val
tokens / val characters / ln 2), which compare across tokenizers. Tokens/s count the chunk's training tokens (steps x
batch x block_size) over its process's wall time; characters/s the same at the train split's characters per token.

Prints a table and writes metrics/bench_bpe.json; --short (the time of 200 character steps) prints only.
"""

import argparse
import contextlib
import io
import json
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from bench import ROOT, machine, stage_process  # puts src/ on sys.path
from compile import probe
from gpt import CORPUS, recipe_params, stage_env, text_project, timed
from plain_gpt import RECIPE
from sample import decode
from torch.nn import functional as F

from chunktrain.recipe.checkpoint import load_checkpoint  # noqa: E402
from chunktrain.recipe.model import load_trained  # noqa: E402
from chunktrain.recipe.splits import read_dataset, token_type, vocab_size  # noqa: E402

VOCAB_SIZES = (512, 1024, 2048, 4096)  # data.vocab_size of the BPE variants
SHORT_STEPS = 200
THREADS = 1  # OMP_NUM_THREADS of every chunk, and torch's threads in the probe: the machine may be shared
PROBE_ROUNDS, PROBE_STEPS = 3, 21  # the probe's first step (which imports torch._dynamo) is left out
EVAL_WINDOWS = 64  # windows per forward pass of the val loss


def variant_params(bpe_vocab: int | None, steps: int, warmup: int) -> dict:
    """docs/params-gpt.yaml on data/text.txt, with characters (bpe_vocab None) or a BPE of `bpe_vocab` tokens, as one
    chunk c1 of `steps` steps that takes its val loss at its end, where its cosine ends."""
    params = recipe_params(steps)
    if bpe_vocab:
        params["data"].update(tokenizer="bpe", vocab_size=bpe_vocab)
    train = params["train"]
    train.update(eval_every=steps, schedule={**train["schedule"], "warmup": warmup},
                 chunks={"c1": {"from": "init", "steps": steps}})
    return params


def step_times(vocabs: dict[str, int], steps: int = PROBE_STEPS) -> dict[str, float]:
    """ms per training step of the recipe's model for each vocabulary: the median of PROBE_ROUNDS probes, the
    vocabularies in turn in each round, so that a change in the machine's load falls on all of them."""
    times = {name: [] for name in vocabs}
    for _ in range(PROBE_ROUNDS):
        for name, vocab in vocabs.items():
            times[name].append(probe(False, steps, vocab)["ms_per_step"])
    return {name: statistics.median(runs) for name, runs in times.items()}


def val_loss(model: torch.nn.Module, tokens: np.ndarray) -> float:
    """The model's mean loss in nats per token over all of `tokens`: windows of block_size tokens tile them, so every
    token but the first is predicted once, from the tokens before it in its window."""

    def tiles(ids: torch.Tensor) -> list[torch.Tensor]:
        """Batches of EVAL_WINDOWS whole windows, then the rest, if any, as a shorter window of its own."""
        whole = len(ids) // model.block_size * model.block_size
        rest = [ids[whole:][None]] if whole < len(ids) else []
        return [*ids[:whole].view(-1, model.block_size).split(EVAL_WINDOWS), *rest]

    ids = torch.from_numpy(tokens.astype(np.int64))
    total = 0.0
    with torch.no_grad():
        for x, y in zip(tiles(ids[:-1]), tiles(ids[1:]), strict=True):
            total += F.cross_entropy(model(x).flatten(0, 1).float(), y.flatten(), reduction="sum").item()
    return total / (len(ids) - 1)


def split_tokens(dataset: Path, split: str) -> tuple[np.ndarray, int]:
    """A split's token ids and the number of characters they decode to."""
    transform = read_dataset(dataset).transform
    tokens = np.fromfile(dataset / f"{split}.bin", dtype=token_type(vocab_size(transform)))
    return tokens, len(decode(tokens.tolist(), transform))


def compare(work: Path, corpus: Path, steps: int, bpe_vocabs: tuple[int, ...] = VOCAB_SIZES,
            probe_steps: int = PROBE_STEPS) -> dict:
    """The character recipe for `steps` steps and each BPE for the same wall time: one row each, and the probe."""
    torch.set_num_threads(THREADS)
    warmup = int(RECIPE["warmup"] * steps / RECIPE["total"])
    variants = {"char": None, **{f"bpe {size}": size for size in bpe_vocabs}}
    projects = {}
    for name, size in variants.items():  # generate learns each BPE: the probe needs the vocabulary it learnt
        with contextlib.redirect_stdout(io.StringIO()):
            projects[name] = text_project(work / name.replace(" ", "-"), corpus, variant_params(size, steps, warmup))
    vocabs = {name: vocab_size(read_dataset(project.dataset).transform) for name, project in projects.items()}
    ms = step_times(vocabs, probe_steps)
    rows = []
    for name, project in projects.items():
        own_steps = max(1, round(steps * ms["char"] / ms[name]))
        project.params = variant_params(variants[name], own_steps, warmup)
        with contextlib.redirect_stdout(io.StringIO()):
            project.plan()
        seconds = timed(stage_process("train@c1"), stage_env(THREADS), cwd=project.root)[0]
        (val, val_chars), (train, train_chars) = (split_tokens(project.dataset, split) for split in ("val", "train"))
        model = load_trained(load_checkpoint(project.checkpoint("c1")), project.checkpoint("c1"))
        nats = val_loss(model, val)
        tokens_per_s = own_steps * RECIPE["batch_size"] * RECIPE["block_size"] / seconds
        rows.append({"tokenizer": name, "vocab": vocabs[name], "parameters": sum(p.numel() for p in model.parameters()),
                     "chars_per_token": val_chars / len(val), "train_chars_per_token": train_chars / len(train),
                     "ms_per_step": ms[name], "steps": own_steps, "seconds": seconds, "tokens_per_s": tokens_per_s,
                     "chars_per_s": tokens_per_s * train_chars / len(train), "val_nats_per_token": nats,
                     "val_bits_per_char": nats * len(val) / val_chars / math.log(2), "val_tokens": len(val),
                     "val_chars": val_chars})
        print(f"{name}: {own_steps} steps, {seconds:.0f} s", file=sys.stderr, flush=True)
    return {"steps": steps, "warmup": warmup, "threads": THREADS, "rows": rows}


def print_table(result: dict) -> None:
    """The rows as a table, then how the steps and figures were taken."""
    print(f"\n{'tokenizer':<10}{'vocab':>6}{'params':>10}{'chars/tok':>10}{'steps':>7}{'seconds':>9}{'tokens/s':>10}"
          f"{'chars/s':>10}{'nats/tok':>10}{'bits/char':>10}")
    for row in result["rows"]:
        print(f"{row['tokenizer']:<10}{row['vocab']:>6}{row['parameters']:>10,}{row['chars_per_token']:>10.3f}"
              f"{row['steps']:>7}{row['seconds']:>9.1f}{row['tokens_per_s']:>10,.0f}{row['chars_per_s']:>10,.0f}"
              f"{row['val_nats_per_token']:>10.4f}{row['val_bits_per_char']:>10.4f}")
    probed = ", ".join(f"{row['ms_per_step']:.1f}" for row in result["rows"])
    print(f"\nsteps: the character recipe's {result['steps']}, and for a BPE as many as fit in their time (the probe's"
          f" ms per step: {probed}); val loss over the whole val split; chars/tok on val; chars/s at the train"
          f" split's chars/tok; OMP_NUM_THREADS={result['threads']}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus", type=Path, default=CORPUS,
                        help="tiny Shakespeare, 1.1 MB (default: ../shared/data/tinyshakespeare.txt beside the repo)")
    parser.add_argument("--short", action="store_true",
                        help=f"the time of {SHORT_STEPS} character steps instead of {RECIPE['total']}; prints, writes"
                             " nothing")
    parser.add_argument("--out", type=Path, default=ROOT / "metrics/bench_bpe.json")
    args = parser.parse_args()
    if not args.corpus.is_file():
        parser.error(f"no corpus at {args.corpus}: the benchmark trains on tiny Shakespeare (1.1 MB, public domain);"
                     " give its path with --corpus (make bench BPE='--corpus PATH')")
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="chunktrain-bpe-") as work:
        result = compare(Path(work), args.corpus, SHORT_STEPS if args.short else RECIPE["total"])
    print_table(result)
    if args.short:
        return
    command = " ".join(["python benchmarks/bpe.py", *sys.argv[1:]])
    args.out.write_text(json.dumps({"command": command, "machine": machine(), "minutes":
                                    round((time.perf_counter() - started) / 60, 1), **result}, indent=2) + "\n")


if __name__ == "__main__":
    main()
