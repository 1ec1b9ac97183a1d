"""What a round of training reads, by data kind: a table's epoch of shuffled rows, or a text's random windows.

Every batch is a function of (seed, position) alone, so chunk boundaries and resumed snapshots cannot change
the data a step sees: 3 + 2 epochs see what 5 epochs see, and 40 + 40 steps what 80 steps see.
"""

import math
from collections.abc import Iterator

import numpy as np
import torch
from torch import nn

from chunktrain.recipe.errors import PipelineError
from chunktrain.recipe.splits import Split, Tokens
from chunktrain.recipe.tasks import Task, evaluate

TRAIN, VAL = 0, 1  # the streams of a text's window positions


def generator(*key: int) -> torch.Generator:
    """A generator seeded by the numbers in `key` alone."""
    # torch's CPU generator keeps only 32 bits of a seed; SeedSequence mixes all the numbers into them.
    return torch.Generator().manual_seed(int(np.random.SeedSequence(list(key)).generate_state(1)[0]))


def epoch_order(n: int, seed: int, epoch: int) -> torch.Tensor:
    """The shuffle of global epoch `epoch`, a function of (seed, epoch) alone."""
    return torch.randperm(n, generator=generator(seed, epoch))


class TableBatches:
    """A table's rounds are its epochs: every training row once, shuffled by (seed, epoch), in steps of `rows`."""

    def __init__(self, train: Split, val: Split, rows: int, seed: int):
        self.train, self.val, self.rows, self.seed = train, val, rows, seed
        self.samples = len(train.y)  # per round
        self.steps = math.ceil(self.samples / rows)  # per round
        self.device = train.y.device

    def round(self, epoch: int, first: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """The global batches of epoch `epoch`, from step `first` of it on."""
        order = epoch_order(self.samples, self.seed, epoch).to(self.device)
        x, y = self.train.x[order], self.train.y[order]  # one gather per epoch; batches are then views
        for start in range(first * self.rows, self.samples, self.rows):
            yield x[start:start + self.rows], y[start:start + self.rows]

    def val_loss(self, model: nn.Module, task: Task) -> float:
        return evaluate(model, self.val, task)[task.metrics[0]]


class TextBatches:
    """A text's rounds are eval_every steps; a step's batch is `windows` random windows of block_size + 1 tokens,
    their positions drawn from (seed, global step). The val loss is the mean over eval_batches fixed windows."""

    def __init__(self, train: Tokens, val: Tokens, *, windows: int, block_size: int, steps: int,
                 eval_batches: int, eval_windows: int, seed: int, device: torch.device):
        for name, tokens in (("train", train), ("val", val)):
            if len(tokens) <= block_size:
                raise PipelineError(f"the {name} split has {len(tokens)} tokens, too few for one window of"
                                    f" model.args.block_size {block_size} + 1")
        self.train, self.val, self.windows, self.block_size = train, val, windows, block_size
        self.steps, self.eval_batches, self.eval_windows, self.seed = steps, eval_batches, eval_windows, seed
        self.samples = steps * windows  # windows per round
        self.device = device

    def round(self, epoch: int, first: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for batch in range(first, self.steps):
            yield self.draw(self.train, self.windows, generator(self.seed, TRAIN, (epoch - 1) * self.steps + batch))

    def draw(self, tokens: Tokens, count: int, random: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """`count` windows at random positions: inputs and next-token targets, (count, block_size) each."""
        starts = torch.randint(len(tokens) - self.block_size, (count,), generator=random).numpy()
        block = torch.from_numpy(tokens.windows(starts, self.block_size + 1).astype(np.int64))
        block = block.to(self.device)
        return block[:, :-1], block[:, 1:]

    def val_loss(self, model: nn.Module, task: Task) -> float:
        total = 0.0
        for batch in range(self.eval_batches):
            x, y = self.draw(self.val, self.eval_windows, generator(self.seed, VAL, batch))
            total += task.loss(model(x), y).item()
        return total / self.eval_batches


Batches = TableBatches | TextBatches
