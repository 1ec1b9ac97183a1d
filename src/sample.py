"""Print text from a language model's checkpoint: the prompt, then --tokens tokens drawn from the model.

Not a DVC stage: run it on any checkpoint of a text pipeline, e.g.
python src/sample.py --checkpoint data/checkpoints/c4.pt --prompt "ROMEO:" --tokens 200 --temperature 0.8 --top_k 20
"""

import argparse
import os
import sys
import time
from pathlib import Path

import torch
from tqdm import tqdm

from chunktrain.recipe.checkpoint import MODEL_CONFIG, TRANSFORM, load_checkpoint
from chunktrain.recipe.errors import PipelineError, brief, run_stage
from chunktrain.recipe.gpt import sample
from chunktrain.recipe.model import load_trained
from chunktrain.recipe.splits import is_text, read_tokenizer

PIECE = 10  # tokens between updates of the progress bar


def encode(text: str, transform: dict) -> torch.Tensor:
    """The token ids of `text` with the checkpoint's tokenizer; a character outside a character vocabulary is the
    user's mistake."""
    if transform.get("tokenizer") is not None:
        ids = read_tokenizer(transform["tokenizer"]).encode(text, add_special_tokens=False).ids
        return torch.tensor(ids, dtype=torch.int64)
    vocab = transform["vocab"]
    ids = {char: index for index, char in enumerate(vocab)}
    unknown = sorted(set(text) - ids.keys())
    if unknown:
        raise PipelineError(f"--prompt: {brief(''.join(unknown))} not in the model's vocabulary"
                            f" ({len(vocab)} characters)")
    return torch.tensor([ids[char] for char in text], dtype=torch.int64)


def decode(ids: list[int], transform: dict) -> str:
    """The text of token ids, with the checkpoint's own tokenizer."""
    if transform.get("tokenizer") is not None:
        return read_tokenizer(transform["tokenizer"]).decode(ids, skip_special_tokens=False)
    return "".join(transform["vocab"][index] for index in ids)


def generate(model: torch.nn.Module, prompt: torch.Tensor, tokens: int, *, block_size: int, **how) -> torch.Tensor:
    """sample() a piece at a time, so a progress bar can follow: each piece continues the text and the generator
    where the last one stopped, so the ids are those of one call."""
    ids = prompt
    with tqdm(total=tokens, unit="token", desc="sample", leave=False, disable=None) as bar:  # on a terminal only
        while len(ids) < len(prompt) + tokens:
            piece = min(PIECE, len(prompt) + tokens - len(ids))
            ids = sample(model, ids, piece, block_size=block_size, **how)
            bar.update(piece)
    return ids


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", type=Path, required=True, help="data/checkpoints/<chunk>.pt of a text pipeline")
    parser.add_argument("--prompt", default="\n",
                        help="text to continue; with a character vocabulary, every character must be in it")
    parser.add_argument("--tokens", type=int, default=500,
                        help="tokens to generate after the prompt (characters, with a character vocabulary)")
    parser.add_argument("--temperature", type=float, default=1.0,
                        help="below 1 sharpens the distribution, above 1 flattens it")
    parser.add_argument("--top_k", type=int, help="draw only from the k most likely tokens (default: all)")
    parser.add_argument("--seed", type=int, default=0, help="the same seed and checkpoint print the same text")
    args = parser.parse_args(argv)
    if not args.prompt:
        raise PipelineError("--prompt: give at least one character")
    if args.tokens < 1:
        raise PipelineError(f"--tokens {args.tokens}: give at least 1")
    if not 1e-3 <= args.temperature <= 1e3:  # outside, logits / temperature overflow or every draw is uniform
        raise PipelineError(f"--temperature {args.temperature}: must be from 0.001 to 1000 (for the likeliest"
                            " token every time, give --top_k 1)")
    if not 0 <= args.seed < 2**64:  # what torch.Generator takes
        raise PipelineError(f"--seed {args.seed}: must be from 0 to 2**64 - 1")
    if args.top_k is not None and args.top_k < 1:
        raise PipelineError(f"--top_k {args.top_k}: give at least 1")
    if "OMP_NUM_THREADS" not in os.environ:
        # One window's forward pass is too small to share: on a busy 2-core machine 500 characters took 4 s on one
        # thread and 18 s on two (a GPT of params-gpt.yaml's size), as the threads wait on each other.
        torch.set_num_threads(1)
    started = time.perf_counter()
    status(f"sample: loading {args.checkpoint}")
    checkpoint = load_checkpoint(args.checkpoint)
    transform, config = checkpoint[TRANSFORM], checkpoint[MODEL_CONFIG]
    if not is_text(transform):
        raise PipelineError(f"{args.checkpoint} is a {transform.get('task')} model; sample.py needs a language model"
                            " (use predict.py for tables)")
    model = load_trained(checkpoint, args.checkpoint)
    status(f"sample: loaded in {time.perf_counter() - started:.1f} s; {args.tokens} tokens to draw")
    prompt = encode(args.prompt, transform)
    if not len(prompt):
        raise PipelineError(f"--prompt {brief(args.prompt)}: the model's tokenizer makes no tokens of it")
    ids = generate(model, prompt, args.tokens, temperature=args.temperature,
                   top_k=args.top_k, generator=torch.Generator().manual_seed(args.seed),
                   block_size=config["args"]["block_size"])
    print(decode(ids.tolist(), transform))


def status(line: str) -> None:
    """What sample is doing, on a terminal's stderr only: stdout is the text, which a user may redirect."""
    if sys.stderr.isatty():
        print(line, file=sys.stderr, flush=True)


if __name__ == "__main__":
    run_stage(main)
