"""The baseline of gpt.py: nanoGPT's training loop written plainly, on the token files of a dataset folder.

No DVC, no checkpoint, no snapshot, no progress bar: build the GPT, AdamW, random windows, clip, warmup and
cosine lr, a val loss every eval_every steps. Prints one JSON line: the val losses and each round's tokens/s.

    python benchmarks/plain_gpt.py --dataset DATASET_FOLDER --steps 500 [--first 500] [--warmup 100 ...]
"""

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
from chunktrain.recipe.gpt import gpt  # noqa: E402

# nanoGPT's CPU recipe for character-level Shakespeare (its README; config/train_shakespeare_char.py and the
# defaults of its train.py for what the command line leaves): 1.88 val loss after 2000 iterations.
RECIPE = {"n_layer": 4, "n_head": 4, "n_embd": 128, "block_size": 64, "dropout": 0.0, "bias": False,
          "batch_size": 12, "lr": 1e-3, "min_lr": 1e-4, "warmup": 100, "total": 2000, "weight_decay": 0.1,
          "betas": [0.9, 0.99], "grad_clip": 1.0, "eval_every": 250, "eval_batches": 20}
MODEL_ARGS = ("n_layer", "n_head", "n_embd", "block_size", "dropout", "bias")


def windows(tokens: np.ndarray, batch_size: int, block_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """nanoGPT's get_batch: `batch_size` windows at random positions, inputs and next-token targets."""
    starts = torch.randint(len(tokens) - block_size, (batch_size,))
    x = torch.stack([torch.from_numpy(tokens[i:i + block_size].astype(np.int64)) for i in starts])
    y = torch.stack([torch.from_numpy(tokens[i + 1:i + 1 + block_size].astype(np.int64)) for i in starts])
    return x, y


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """nanoGPT's configure_optimizers: decay on every weight of two or more dimensions (decay_params:
    matrices_and_embeddings), none on biases and norms."""
    return [{"params": [p for p in model.parameters() if p.dim() >= 2], "weight_decay": weight_decay},
            {"params": [p for p in model.parameters() if p.dim() < 2], "weight_decay": 0.0}]


def lr_at(step: int, recipe: dict) -> float:
    """nanoGPT's get_lr: linear warmup, then cosine decay to min_lr at `total`."""
    if step < recipe["warmup"]:
        return recipe["lr"] * (step + 1) / (recipe["warmup"] + 1)
    progress = min((step - recipe["warmup"]) / (recipe["total"] - recipe["warmup"]), 1.0)
    return recipe["min_lr"] + 0.5 * (1.0 + math.cos(math.pi * progress)) * (recipe["lr"] - recipe["min_lr"])


@torch.no_grad()
def val_loss(model: nn.Module, val: np.ndarray, recipe: dict) -> float:
    model.eval()
    losses = []
    for _ in range(recipe["eval_batches"]):
        x, y = windows(val, recipe["batch_size"], recipe["block_size"])
        logits = model(x)
        losses.append(F.cross_entropy(logits.view(-1, logits.shape[-1]), y.view(-1)).item())
    model.train()
    return sum(losses) / len(losses)


def train(dataset: Path, first: int, steps: int, recipe: dict, weights: Path | None = None) -> dict:
    """Steps first .. first + steps - 1 of the recipe from fresh weights; val losses and tokens/s per round. The
    trained weights go to `weights`, if given, so that a caller can measure them as it measures a chunk's."""
    vocab = len(json.loads((dataset / "dataset.json").read_text())["transform"]["vocab"])
    train_tokens = np.memmap(dataset / "train.bin", dtype=np.uint16, mode="r")
    val_tokens = np.memmap(dataset / "val.bin", dtype=np.uint16, mode="r")
    torch.manual_seed(0)
    model = gpt(vocab, vocab, **{name: recipe[name] for name in MODEL_ARGS})
    optimizer = torch.optim.AdamW(param_groups(model, recipe["weight_decay"]), lr=recipe["lr"],
                                  betas=tuple(recipe["betas"]))
    losses, rates = [], []
    started = time.perf_counter()
    for step in range(first, first + steps):
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step, recipe)
        x, y = windows(train_tokens, recipe["batch_size"], recipe["block_size"])
        logits = model(x)
        loss = F.cross_entropy(logits.view(-1, logits.shape[-1]), y.view(-1))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), recipe["grad_clip"])
        optimizer.step()
        if (step + 1 - first) % recipe["eval_every"] == 0:
            losses.append(val_loss(model, val_tokens, recipe))
            tokens = recipe["eval_every"] * recipe["batch_size"] * recipe["block_size"]
            rates.append(tokens / (time.perf_counter() - started))
            started = time.perf_counter()
    if weights:
        torch.save(model.state_dict(), weights)
    return {"val_losses": losses, "tokens_per_s": rates}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", type=Path, required=True, help="a text's dataset folder, as generate writes it")
    parser.add_argument("--steps", type=int, required=True, help="optimizer steps to train")
    parser.add_argument("--first", type=int, default=0,
                        help="the recipe's step to start at (for its lr); the weights start fresh")
    for name in ("warmup", "total", "eval_every"):  # what gpt.py scales for a shorter run
        parser.add_argument(f"--{name.replace('_', '-')}", type=int, default=RECIPE[name])
    parser.add_argument("--weights", type=Path, help="file to save the trained state_dict to")
    args = parser.parse_args()
    recipe = {**RECIPE, "warmup": args.warmup, "total": args.total, "eval_every": args.eval_every}
    print(json.dumps(train(args.dataset, args.first, args.steps, recipe, args.weights)))


if __name__ == "__main__":
    main()
