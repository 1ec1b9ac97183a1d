"""Stage train in process: chunks continue bit for bit and keep their best round, resume from a snapshot, refuse a
parent of another recipe."""

import itertools
import json
import re

import pytest
import torch

from chunktrain.recipe import checkpoint as ckpt
from chunktrain.recipe.checkpoint import CheckpointError, load_checkpoint
from chunktrain.recipe.errors import PipelineError
from chunktrain.runner import trainer
from chunktrain.recipe.batches import epoch_order
from chunktrain.testing import Project, assert_same_state, chunked_and_whole, losses, new_project, sha256, write_params
from tables import classification_table, own_params, write_table

SCHEDULES = {
    "none": {"warmup": 0.0, "decay": "none", "total": None, "min_lr": 0.0},
    "cosine": {"warmup": 0.5, "decay": "cosine", "total": 3, "min_lr": 0.0005},
    "cooldown": {"warmup": 0.5, "decay": "none", "total": None, "min_lr": 0.0001},
}
# The fast tier covers each optimizer, schedule and task once; the other combinations run with the slow tests.
FAST = {("adam", "none", "regression"), ("sgd", "cosine", "classification"), ("adamw", "cooldown", "regression")}
CASES = [pytest.param(*case, marks=[] if case in FAST else pytest.mark.slow)
         for case in itertools.product(("adam", "sgd", "adamw"), SCHEDULES, ("regression", "classification"))]


def small_dataset(root, params: dict, task: str) -> Project:
    """A few batches an epoch, the last one short: a synthetic regression, or a classifier's table of string labels."""
    if task == "classification":
        write_table(root / "classes.csv", task, classification_table(rows=300))
        own_params(params, task, "classes.csv")
    else:
        params["synthetic"]["n_samples"] = 500
    stages = new_project(root, params, git=False)
    stages.generate()
    return stages


def assert_same_result(a: dict, b: dict) -> None:
    assert_same_state(a, b)
    assert losses(a) == losses(b)  # epoch, step, train and val loss, lr
    assert (a[ckpt.EPOCH], a[ckpt.GLOBAL_STEP], a[ckpt.LOSS]) == (b[ckpt.EPOCH], b[ckpt.GLOBAL_STEP], b[ckpt.LOSS])


@pytest.mark.parametrize("optimizer, schedule, task", CASES)
def test_a_chunk_then_its_child_equal_one_chunk_of_both_bit_for_bit(tmp_path, params, optimizer, schedule, task):
    stages = small_dataset(tmp_path, params, task)
    params["train"].update(optimizer=optimizer, schedule=SCHEDULES[schedule])
    chunked, whole = chunked_and_whole(stages, params, 2, 1)
    assert_same_result(chunked, whole)
    assert chunked[ckpt.EPOCH] == 3
    if schedule == "cooldown":  # and a cooldown continues either of them alike, down to min_lr
        params["train"]["chunks"].update(c2_cool={"from": "c2", "epochs": 1, "cooldown": "cosine"},
                                         whole_cool={"from": "whole", "epochs": 1, "cooldown": "cosine"})
        write_params(stages.params_path, params)
        chunked, whole = (load_checkpoint(stages.train(name)) for name in ("c2_cool", "whole_cool"))
        assert_same_result(chunked, whole)
        assert [record["lr"] for record in whole[ckpt.HISTORY]] == [0.01, 0.01, 0.01, 0.0001]


@pytest.fixture
def overfitting(tmp_path, params) -> Project:
    """A classifier too wide for its 300 rows at a high lr: over 6 epochs its val loss is lowest after epoch 2."""
    params["model"]["args"]["hidden"] = [64]
    params["train"]["lr"] = 0.05
    return small_dataset(tmp_path, params, "classification")


def test_a_chunk_keeps_its_best_round_bit_for_bit_and_continues_from_its_last(overfitting, params):
    chunked, whole = chunked_and_whole(overfitting, params, 1, 5)
    assert_same_result(chunked, whole)  # a child still continues from the last round: chunked == whole
    assert whole[ckpt.EPOCH] == 6 and whole[ckpt.BEST][ckpt.EPOCH] == 2
    params["train"]["chunks"]["stopped"] = {"from": "init", "epochs": 2}
    write_params(overfitting.params_path, params)
    stopped = load_checkpoint(overfitting.train("stopped"))
    c1 = load_checkpoint(overfitting.checkpoint("c1"))
    assert c1[ckpt.BEST][ckpt.EPOCH] == 1  # a chunk's best is among its own rounds; here its last, stored once:
    assert all(tensor.untyped_storage().data_ptr() == c1[ckpt.MODEL_STATE][key].untyped_storage().data_ptr()
               for key, tensor in c1[ckpt.BEST][ckpt.MODEL_STATE].items())
    for kept in (whole, chunked):  # the whole run's best round, and the chunked one's (c2's first)
        assert kept[ckpt.BEST][ckpt.EPOCH] == 2
        for key, tensor in stopped[ckpt.MODEL_STATE].items():
            assert torch.equal(kept[ckpt.BEST][ckpt.MODEL_STATE][key], tensor), key
    overfitting.evaluate()  # scores each chunk's best round: c2, whole and stopped share it
    chunks = json.loads((overfitting.root / "metrics/chunks.json").read_text())
    same = [{k: v for k, v in chunks[name].items() if k != "checkpoint"} for name in ("c2", "whole", "stopped")]
    assert same[0] == same[1] == same[2] and same[0]["epoch"] == 2
    assert same[0]["val_loss"] == stopped[ckpt.HISTORY][-1]["val_loss"] < chunks["c1"]["val_loss"]
    best = json.loads((overfitting.root / "metrics/best.json").read_text())
    assert (best["chunk"], best["epoch"]) == ("c2", 2)


def test_the_shuffle_depends_on_seed_and_global_epoch_only():
    assert torch.equal(epoch_order(100, seed=0, epoch=4), epoch_order(100, seed=0, epoch=4))
    assert not torch.equal(epoch_order(100, seed=0, epoch=4), epoch_order(100, seed=0, epoch=5))
    assert not torch.equal(epoch_order(100, seed=0, epoch=4), epoch_order(100, seed=1, epoch=4))


def test_a_chunk_override_changes_only_that_chunk(stages, params):
    params["train"]["chunks"]["c2"].update(lr=0.002, batch_size=32)
    write_params(stages.params_path, params)
    c1 = load_checkpoint(stages.train("c1"))
    c2 = load_checkpoint(stages.train("c2"))
    assert [r["lr"] for r in c2[ckpt.HISTORY]] == [0.01, 0.01, 0.002, 0.002]
    assert c2[ckpt.GLOBAL_STEP] - c1[ckpt.GLOBAL_STEP] == 2 * 50  # 1600 rows in batches of 32
    assert c2[ckpt.OPTIMIZER_STATE]["param_groups"][0]["lr"] == 0.002
    settings = c2[ckpt.LINEAGE]["spec"]["settings"]
    assert (settings["lr"], settings["batch_size"]) == (0.002, 32)
    assert {**settings, "lr": 0.01, "batch_size": 64} == c1[ckpt.LINEAGE]["spec"]["settings"]
    assert c2[ckpt.LINEAGE]["parent"] == c1[ckpt.LINEAGE]["id"]


def test_a_diverging_chunk_fails_and_writes_no_checkpoint(stages, params):
    params["train"].update(optimizer="sgd", lr=1e3)  # the largest lr plan allows
    write_params(stages.params_path, params)
    stages.init()
    with pytest.raises(PipelineError, match=r"training loss is (nan|inf) at step \d+: the run diverged"):
        stages.train("c1")
    assert list(stages.checkpoint("c1").parent.iterdir()) == [stages.checkpoint("init")]
    assert not (stages.root / "metrics/train/c1.json").exists()


def test_a_missing_parent_says_which_stage_rebuilds_it(stages):
    with pytest.raises(CheckpointError, match=r"c1.pt not found; run `dvc repro train@c1` to rebuild it"):
        stages.train("c2")


@pytest.mark.parametrize("edit, problem", [
    (lambda p: p["model"]["args"].update(hidden=[8, 8]),
     r"does not match params.yaml: model.args.hidden is \[16\] in the file, \[8, 8\] in params.yaml"),
    (lambda p: p.update(seed=1), r"does not match params.yaml: seed is 0 in the file, 1 in params.yaml"),
    (lambda p: p["data"].update(val_fraction=0.2), r"was made from another dataset than data/dataset/ holds now"),
])
def test_a_parent_of_another_seed_model_or_dataset_is_refused(stages, params, edit, problem):
    edit(params)
    write_params(stages.params_path, params)
    stages.generate()  # the data as params.yaml now says, but the init checkpoint of before
    with pytest.raises(CheckpointError, match=rf"init.pt {problem}; run `dvc repro init` to rebuild it"):
        stages.train("c1")
    assert not stages.checkpoint("c1").exists()


def test_a_chunks_metrics_file_is_rewritten_after_every_epoch(stages, monkeypatch):
    seen = []
    after_round = trainer.Progress.round

    def read_after_round(progress, record):
        after_round(progress, record)
        seen.append(json.loads(progress.metrics.read_text()))  # what `dvc metrics show` shows mid-chunk

    monkeypatch.setattr(trainer.Progress, "round", read_after_round)
    stages.train("c1")
    assert [(metrics["epoch"], metrics["step"]) for metrics in seen] == [(1, 25), (2, 50)]  # 25 steps an epoch
    assert set(seen[0]) == {"epoch", "step", "train_loss", "val_loss"}
    assert json.loads((stages.root / "metrics/train/c1.json").read_text()) == seen[-1]


def test_off_a_terminal_a_chunk_says_where_it_is_its_speed_and_the_time_left(stages, monkeypatch, capsys):
    """Under pytest, as in a log file or a SLURM job's output, there is no progress bar: a line every LOG_SECONDS
    (here after every step), and the round's line with the time the chunk has left."""
    monkeypatch.setattr(trainer.Progress, "LOG_SECONDS", 0.0)
    stages.train("c1")
    lines = capsys.readouterr().out.splitlines()
    steps = [line for line in lines if re.fullmatch(r"train@c1: \d+% of the chunk, [\d,]+ samples/s, \S+ left", line)]
    assert len(steps) == 50 and steps[-1].startswith("train@c1: 100% of the chunk")  # 25 steps an epoch
    assert re.search(r"train@c1 epoch 1/2: .* samples/s, \d\d:\d\d left$", "\n".join(lines), re.MULTILINE)


class Crash(Exception):
    """Stands in for a kill: the trainer stops between two steps, leaving what it wrote."""


def crash_at_step(monkeypatch, n: int) -> None:
    """Raise Crash at the n-th step, where CHUNKTRAIN_KILL_AT=step:n would SIGKILL the process."""
    reached = []

    def crash_point(name: str) -> None:
        reached.append(name)
        if len(reached) == n:
            raise Crash()

    monkeypatch.setattr(trainer, "crash_point", crash_point)


@pytest.fixture
def snapshotting(stages, params):
    """Stages whose chunks write a snapshot every 10 steps (of 25 an epoch)."""
    params["train"].update(snapshot_every_steps=10, snapshot_every_seconds=None)
    write_params(stages.params_path, params)
    return stages


def test_an_interrupted_chunk_resumes_from_its_snapshot_to_the_same_bytes(snapshotting, monkeypatch, capsys):
    uninterrupted = sha256(snapshotting.train("c1"))
    snapshotting.checkpoint("c1").unlink()
    with monkeypatch.context() as patch:
        crash_at_step(patch, 35)
        with pytest.raises(Crash):
            snapshotting.train("c1")
    snapshot = snapshotting.root / ".resume/c1/snapshot.pt"
    assert snapshot.exists() and not snapshotting.checkpoint("c1").exists()
    capsys.readouterr()
    assert sha256(snapshotting.train("c1")) == uninterrupted
    assert "resuming c1 from step 30 of the chunk" in capsys.readouterr().out
    assert not snapshot.parent.exists()  # cleared once the checkpoint is written


def test_a_snapshot_of_another_recipe_is_not_resumed_from(snapshotting, params, monkeypatch, capsys):
    with monkeypatch.context() as patch:
        crash_at_step(patch, 35)
        with pytest.raises(Crash):
            snapshotting.train("c1")
    params["train"]["chunks"]["c1"]["lr"] = 0.005
    write_params(snapshotting.params_path, params)
    capsys.readouterr()
    c1 = load_checkpoint(snapshotting.train("c1"))
    out = capsys.readouterr().out
    assert "skipping snapshot" in out and "it was taken with another spec" in out and "resuming" not in out
    assert [record["lr"] for record in c1[ckpt.HISTORY]] == [0.005, 0.005]


def test_a_resume_after_the_best_round_keeps_it_to_the_same_bytes(overfitting, params, monkeypatch):
    params["train"].update(snapshot_every_steps=4, snapshot_every_seconds=None)
    params["train"]["chunks"] = {"c1": {"from": "init", "epochs": 6}}  # 6 steps an epoch
    write_params(overfitting.params_path, params)
    overfitting.init()
    uninterrupted = sha256(overfitting.train("c1"))
    overfitting.checkpoint("c1").unlink()
    with monkeypatch.context() as patch:
        crash_at_step(patch, 22)  # the snapshot at step 20, in epoch 4, holds epoch 2 as the best
        with pytest.raises(Crash):
            overfitting.train("c1")
    assert load_checkpoint(overfitting.root / ".resume/c1/snapshot.pt")[ckpt.BEST][ckpt.EPOCH] == 2
    assert sha256(overfitting.train("c1")) == uninterrupted
