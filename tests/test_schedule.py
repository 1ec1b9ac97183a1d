"""LR schedules: every step's lr against torch's own schedulers; the shapes and a cooldown. (Across chunk
boundaries: test_training.py.)"""

import math

import pytest
import torch

from chunktrain.params import Params, plan
from chunktrain.recipe.model import build_model, build_optimizer
from chunktrain.recipe.splits import Split
from chunktrain.recipe.tasks import Regression
from chunktrain.testing import TINY_PARAMS, TINY_TEXT_PARAMS
from chunktrain.recipe.batches import TableBatches
from chunktrain.runner.trainer import chunk_schedule
from chunktrain.recipe.loop import Position, train_rounds
from chunktrain.recipe.schedule import Schedule, step_span

PEAK, STEPS = 0.01, 25  # 1600 training rows in batches of 64


def torch_reference(epochs: int, warmup_epochs: float, decay: str, total_epochs: float | None,
                    min_lr: float) -> list[float]:
    """The lr of every step from torch's schedulers, stepped once per optimizer step, as a plain loop would."""
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=PEAK)
    warmup = round(warmup_epochs * STEPS)
    phases, milestones = [], []
    if warmup:
        # factor (i + 1) / warmup at step i: the warmup's last step reaches the peak
        phases.append(torch.optim.lr_scheduler.LinearLR(optimizer, start_factor=1 / warmup, total_iters=warmup - 1))
        milestones.append(warmup)
    if decay == "cosine":
        phases.append(torch.optim.lr_scheduler.CosineAnnealingLR(
            optimizer, T_max=round((total_epochs - warmup_epochs) * STEPS), eta_min=min_lr))
    elif decay == "linear":
        steps = round((total_epochs - warmup_epochs) * STEPS)
        phases.append(torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda j: (PEAK - (PEAK - min_lr) * min(j, steps) / steps) / PEAK))
    else:
        phases.append(torch.optim.lr_scheduler.ConstantLR(optimizer, factor=1.0, total_iters=0))
    scheduler = (phases[0] if len(phases) == 1
                 else torch.optim.lr_scheduler.SequentialLR(optimizer, phases, milestones=milestones))
    lrs = []
    for _ in range(epochs * STEPS):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return lrs


def loop_lrs(schedule: Schedule, epochs: int) -> list[float]:
    """The lr of every step that train_rounds takes with `schedule`, read from the optimizer after the step."""
    torch.manual_seed(0)
    train, val = Split(torch.randn(1600, 2), torch.randn(1600, 1)), Split(torch.randn(10, 2), torch.randn(10, 1))
    config = {"arch": "mlp", "args": {"hidden": []}, "task": "regression", "inputs": 2, "outputs": 1,
              "optimizer": "sgd", "decay_params": "matrices"}
    model = build_model(config)
    optimizer = build_optimizer(model, config)
    seen = []

    def on_step(*_) -> None:
        lrs = {group["lr"] for group in optimizer.param_groups}
        assert len(lrs) == 1, lrs  # the weights' group and the biases' (undecayed) group follow the same line
        seen.extend(lrs)

    train_rounds(model, optimizer, TableBatches(train, val, rows=64, seed=0), Position(epoch=1, step=0),
                 last_round=epochs, settings=Params.model_validate(TINY_PARAMS).train.settings("c1"),
                 task=Regression(), lr=schedule.lr, on_step=on_step)
    return seen


@pytest.mark.parametrize("warmup_epochs, decay, total_epochs, min_lr", [
    (0.4, "cosine", 6, 0.001),  # warmup and decay span whole steps (25 an epoch), as torch counts them
    (1.0, "linear", 5, 0.0),
    (0.0, "cosine", 6, 0.0),
    (0.4, "none", None, 0.0),
])
def test_every_steps_lr_equals_torchs_schedulers(warmup_epochs, decay, total_epochs, min_lr):
    schedule = Schedule(peak=PEAK, warmup=warmup_epochs, decay=decay, total=total_epochs, min_lr=min_lr)
    ours = loop_lrs(schedule, epochs=6)
    reference = torch_reference(6, warmup_epochs, decay, total_epochs, min_lr)
    assert len(ours) == len(reference) == 6 * STEPS
    for step, (a, b) in enumerate(zip(ours, reference)):
        assert a == pytest.approx(b, rel=1e-9, abs=1e-15), step


def test_a_cooldown_falls_monotonically_from_its_start_lr_to_min_lr():
    main = Schedule(peak=PEAK, warmup=0.5, decay="cosine", total=20, min_lr=0.0001)
    cooldown = Schedule(peak=PEAK, warmup=0.5, decay="cosine", total=20, min_lr=0.0001, cooldown="linear", start=4,
                        end=6)
    lrs = [cooldown.lr(*step_span(epoch, batch, STEPS)) for epoch in (5, 6) for batch in range(STEPS)]
    assert all(a > b for a, b in zip(lrs, lrs[1:]))
    assert main.lr(4, 4) > lrs[0] > main.lr(4, 4) * 0.97  # it falls from where the main line stands
    assert lrs[-1] == 0.0001


def test_cosine_and_linear_shapes_at_their_midpoints():
    cosine = Schedule(peak=1.0, decay="cosine", total=2, min_lr=0.0)
    linear = Schedule(peak=1.0, decay="linear", total=2, min_lr=0.0)
    assert cosine.lr(1.0, 1.1) == pytest.approx(0.5) and linear.lr(1.0, 1.1) == pytest.approx(0.5)
    assert cosine.lr(0.5, 0.6) == pytest.approx((1 + math.cos(math.pi / 4)) / 2) and linear.lr(0.5, 0.6) == 0.75
    assert cosine.lr(5.0, 5.1) == linear.lr(5.0, 5.1) == 0.0  # past total: min_lr
    warm = Schedule(peak=1.0, warmup=1.0)
    assert warm.lr(0.0, 0.25) == 0.25 and warm.lr(0.75, 1.0) == 1.0 and warm.lr(1.0, 1.25) == 1.0


def test_a_texts_schedule_counts_steps_across_its_chunks():
    """A text's chunks train in rounds of eval_every steps; warmup and total count global steps."""
    params = Params.model_validate(TINY_TEXT_PARAMS)  # warmup 5, cosine to min_lr at step 60; eval_every 10
    line = Schedule(peak=0.003, warmup=5, decay="cosine", total=60, min_lr=0.0003)
    specs = plan(params)
    lrs = []
    for name, rounds_before in (("c1", 0), ("c2", 2)):  # 20 steps each
        lr = chunk_schedule(specs[f"train/{name}.json"], rounds_before)
        lrs += [lr(*step_span(epoch, batch, 10)) for epoch in range(rounds_before + 1, rounds_before + 3)
                for batch in range(10)]
    assert lrs == pytest.approx([line.lr(step, step + 1) for step in range(40)], rel=1e-12)
    assert lrs[3] < lrs[4] == 0.003 == lrs[5] > lrs[6]  # the warmup's last step (the 5th) is at the peak
