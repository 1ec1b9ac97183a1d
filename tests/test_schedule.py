"""LR schedules over the lineage: every step's lr against torch's own schedulers, exact across chunk boundaries."""

import math
import re

import pytest
import torch

from chunktrain import checkpoint as ckpt
from chunktrain.checkpoint import load_checkpoint
from chunktrain.errors import PipelineError
from chunktrain.params import load_params
from chunktrain.schedule import Schedule, step_span
from chunktrain.training import Position, train_epochs
from chunktrain.testing import assert_same_state, chunked_and_whole, losses, write_params

PEAK, STEPS = 0.01, 25  # tiny params: 1600 training rows in batches of 64


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


def loop_lrs(stages, schedule: Schedule, epochs: int) -> list[float]:
    """The lr of every step that train_epochs takes with `schedule`, read from the optimizer after the step."""
    from chunktrain.data import read_split
    from chunktrain.model import build_model, build_optimizer, model_config

    train, val = read_split(stages.split["train"]), read_split(stages.split["val"])
    model = build_model(model_config(4, [16], "sgd"))
    optimizer = build_optimizer(model, model_config(4, [16], "sgd"))
    seen = []
    train_epochs(model, optimizer, train, val, Position(epoch=1), last_epoch=epochs, batch_size=64, seed=0,
                 lr=schedule.lr, on_step=lambda *_: seen.append(optimizer.param_groups[0]["lr"]))
    return seen


@pytest.mark.parametrize("warmup_epochs, decay, total_epochs, min_lr", [
    (0.4, "cosine", 6, 0.001),  # warmup and decay span whole steps (25 an epoch), as torch counts them
    (1.0, "linear", 5, 0.0),
    (0.0, "cosine", 6, 0.0),
    (0.4, "none", None, 0.0),
])
def test_every_steps_lr_equals_torchs_schedulers(stages, warmup_epochs, decay, total_epochs, min_lr):
    schedule = Schedule(peak=PEAK, warmup_epochs=warmup_epochs, decay=decay, total_epochs=total_epochs,
                        min_lr=min_lr)
    ours = loop_lrs(stages, schedule, epochs=6)
    reference = torch_reference(6, warmup_epochs, decay, total_epochs, min_lr)
    assert len(ours) == len(reference) == 6 * STEPS
    for step, (a, b) in enumerate(zip(ours, reference)):
        assert a == pytest.approx(b, rel=1e-9, abs=1e-15), step


def test_a_cooldown_falls_monotonically_from_its_start_lr_to_min_lr():
    main = Schedule(peak=PEAK, warmup_epochs=0.5, decay="cosine", total_epochs=20, min_lr=0.0001)
    cooldown = Schedule(peak=PEAK, warmup_epochs=0.5, decay="cosine", total_epochs=20, min_lr=0.0001,
                        cooldown="linear", start=4, end=6)
    lrs = [cooldown.lr(*step_span(epoch, batch, STEPS)) for epoch in (5, 6) for batch in range(STEPS)]
    assert all(a > b for a, b in zip(lrs, lrs[1:]))
    assert main.lr(4, 4) > lrs[0] > main.lr(4, 4) * 0.97  # it falls from where the main line stands
    assert lrs[-1] == 0.0001


SCHEDULED = {"warmup_epochs": 0.5, "decay": "cosine", "total_epochs": 6, "min_lr": 0.0005}


@pytest.mark.parametrize("optimizer", ["adam", pytest.param("sgd", marks=pytest.mark.slow),
                                       pytest.param("adamw", marks=pytest.mark.slow)])
def test_three_plus_three_epochs_equal_six_with_warmup_and_cosine(stages, params, optimizer):
    params["train"]["optimizer"] = optimizer
    params["train"]["schedule"] = SCHEDULED
    chunked, whole = chunked_and_whole(stages, params, 3, 3)
    assert_same_state(chunked, whole)
    assert losses(chunked) == losses(whole)  # epoch, train and val loss, lr
    assert chunked[ckpt.GLOBAL_STEP] == whole[ckpt.GLOBAL_STEP] == 6 * STEPS
    lrs = [record["lr"] for record in whole[ckpt.HISTORY]]
    # cosine reaches min_lr at total_epochs, the position after the last step
    assert lrs == sorted(lrs, reverse=True) and 0.0005 < lrs[-1] < 0.000502


def test_a_cooldown_branch_ends_at_min_lr(stages, params):
    params["train"]["schedule"] = {"warmup_epochs": 0.5, "decay": "none", "total_epochs": None, "min_lr": 0.0001}
    params["train"]["chunks"]["c2_cool"] = {"from": "c2", "epochs": 2, "cooldown": "cosine"}
    write_params(stages.params_path, params)
    stages.init()
    stages.train("c1", "init")
    stages.train("c2", "c1")
    cool = load_checkpoint(stages.train("c2_cool", "c2"), rebuild="-")
    assert [record["lr"] for record in cool[ckpt.HISTORY]] == [0.01, 0.01, 0.01, 0.01,
                                                               pytest.approx(0.01 / 2 + 0.0001 / 2), 0.0001]
    assert cool[ckpt.TRAIN_SETTINGS]["cooldown"] == "cosine"


@pytest.mark.parametrize("edit, message", [
    (lambda t: t["schedule"].update(decay="cosine"), "train.schedule.total_epochs: decay cosine needs"),
    (lambda t: t["schedule"].update(decay="linear", warmup_epochs=3, total_epochs=2),
     "train.schedule.total_epochs: 2.0 must be after the warmup's end (warmup_epochs 3.0)"),
    (lambda t: t["schedule"].update(total_epochs=4), "train.schedule.total_epochs: 4.0 is used only by decay"),
    (lambda t: t["schedule"].update(warmup_epochs=-1), "train.schedule.warmup_epochs: Input should be greater"),
    (lambda t: t["schedule"].update(min_lr=-0.1), "train.schedule.min_lr: Input should be greater"),
    (lambda t: t["schedule"].update(min_lr=0.05), "train.schedule.min_lr: 0.05 must be below the lr of chunk c1"),
    (lambda t: t["chunks"]["c2"].update(cooldown="linear"),
     "train.chunks.c3.from: 'c2' is a cooldown chunk, which ends its branch"),
    (lambda t: t["chunks"]["c2"].update(cooldown="step"), "train.chunks.c2.cooldown: Input should be 'linear'"),
])
def test_nonsense_schedules_are_refused_naming_the_key(tmp_path, params, edit, message):
    edit(params["train"])
    with pytest.raises(PipelineError, match=re.escape(message)):
        load_params(write_params(tmp_path / "params.yaml", params))


def test_cosine_and_linear_shapes_at_their_midpoints():
    cosine = Schedule(peak=1.0, decay="cosine", total_epochs=2, min_lr=0.0)
    linear = Schedule(peak=1.0, decay="linear", total_epochs=2, min_lr=0.0)
    assert cosine.lr(1.0, 1.1) == pytest.approx(0.5) and linear.lr(1.0, 1.1) == pytest.approx(0.5)
    assert cosine.lr(0.5, 0.6) == pytest.approx((1 + math.cos(math.pi / 4)) / 2) and linear.lr(0.5, 0.6) == 0.75
    assert cosine.lr(5.0, 5.1) == linear.lr(5.0, 5.1) == 0.0  # past total_epochs: min_lr
    warm = Schedule(peak=1.0, warmup_epochs=1.0)
    assert warm.lr(0.0, 0.25) == 0.25 and warm.lr(0.75, 1.0) == 1.0 and warm.lr(1.0, 1.25) == 1.0
