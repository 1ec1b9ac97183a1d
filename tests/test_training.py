"""Exact continuation and the train stage's refusals, through the stage scripts on temp paths."""

import json
import subprocess
import sys

import pytest
import torch

from chunktrain import checkpoint as ckpt
from chunktrain.checkpoint import CheckpointError, load_checkpoint
from chunktrain.errors import PipelineError
from chunktrain.training import epoch_order
from chunktrain.testing import ROOT, assert_same_state, chunked_and_whole, losses, project_env, wait_for, write_params


@pytest.mark.parametrize("optimizer", ["adam", pytest.param("sgd", marks=pytest.mark.slow),
                                       pytest.param("adamw", marks=pytest.mark.slow)])
def test_three_plus_two_epochs_equal_five_bit_for_bit(stages, params, optimizer):
    params["train"]["optimizer"] = optimizer
    chunked, whole = chunked_and_whole(stages, params, 3, 2)
    assert chunked[ckpt.EPOCH] == whole[ckpt.EPOCH] == 5
    assert_same_state(chunked, whole)
    assert losses(chunked) == losses(whole)
    assert chunked[ckpt.LOSS] == whole[ckpt.LOSS]


def test_the_shuffle_depends_on_seed_and_global_epoch_only():
    assert torch.equal(epoch_order(100, seed=0, epoch=4), epoch_order(100, seed=0, epoch=4))
    assert not torch.equal(epoch_order(100, seed=0, epoch=4), epoch_order(100, seed=0, epoch=5))
    assert not torch.equal(epoch_order(100, seed=0, epoch=4), epoch_order(100, seed=1, epoch=4))


def test_a_chunk_override_changes_only_that_chunk(stages, params):
    params["train"]["chunks"]["c2"]["lr"] = 0.002
    params["train"]["chunks"]["c2"]["batch_size"] = 32
    write_params(stages.params_path, params)
    stages.train("c1", "init")
    c2 = load_checkpoint(stages.train("c2", "c1"), rebuild="-")
    assert [r["lr"] for r in c2[ckpt.HISTORY]] == [0.01, 0.01, 0.002, 0.002]
    assert c2[ckpt.TRAIN_SETTINGS] == {"epochs": 2, "lr": 0.002, "batch_size": 32, "weight_decay": 0.0,
                                       "schedule": params["train"]["schedule"], "cooldown": None}
    assert c2[ckpt.OPTIMIZER_STATE]["param_groups"][0]["lr"] == 0.002
    assert c2[ckpt.PARENT] == "c1" and c2[ckpt.PARENT_SHA256] == ckpt.file_sha256(stages.checkpoint("c1"))


def test_a_diverging_chunk_fails_and_writes_no_checkpoint(stages, params):
    params["train"]["optimizer"] = "sgd"
    params["train"]["lr"] = 1e6
    write_params(stages.params_path, params)
    stages.init()
    with pytest.raises(PipelineError, match=r"training loss is (nan|inf) in epoch 1: the run diverged"):
        stages.train("c1", "init")
    assert not stages.checkpoint("c1").exists()
    checkpoints = stages.checkpoint("c1").parent
    assert [path for path in checkpoints.iterdir() if path.suffix != ".sha256"] == [stages.checkpoint("init")]


def test_a_missing_parent_says_which_stage_rebuilds_it(stages):
    with pytest.raises(CheckpointError, match=r"c1.pt not found; run `dvc repro train@c1` to rebuild it"):
        stages.train("c2", "c1")


def test_a_parent_built_for_another_model_is_refused(stages, params):
    params["model"]["hidden"] = [8, 8]
    write_params(stages.params_path, params)
    with pytest.raises(CheckpointError, match=r"init.pt was built for another model config \(hidden: \[16\]"):
        stages.train("c1", "init")


def test_a_chunk_not_in_params_is_refused(stages):
    with pytest.raises(PipelineError, match="chunk 'c9' is not in train.chunks"):
        stages.train("c9", "init")


def test_evaluate_refuses_a_checkpoint_trained_from_an_older_parent(stages, params):
    stages.train("c1", "init")
    stages.train("c2", "c1")
    stages.train("c3", "c2")
    params["train"]["chunks"]["c1"]["lr"] = 0.005
    write_params(stages.params_path, params)
    stages.train("c1", "init")  # c2 and c3 are now stale
    with pytest.raises(CheckpointError, match=r"c2.pt is stale: it was not trained from the current .*c1.pt"):
        stages.evaluate()


def test_a_chunks_metrics_file_follows_it_epoch_by_epoch(stages, params):
    params["train"]["chunks"]["long"] = {"from": "init", "epochs": 300}
    write_params(stages.params_path, params)
    metrics = stages.root / "metrics/long.json"
    stage = subprocess.Popen(
        [sys.executable, str(ROOT / "src/train.py"), "--params", str(stages.params_path), "--chunk", "long",
         "--parent", str(stages.checkpoint("init")), *stages.split_args("train", "val"),
         "--out", str(stages.checkpoint("long")), "--metrics", str(metrics),
         "--snapshot", str(stages.root / ".resume/long/snapshot.pt")],
        env=project_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    wait_for(lambda: metrics.exists() or stage.poll() is not None, "the first epoch's metrics")
    during = json.loads(metrics.read_text())
    still_running = stage.poll() is None
    _, stderr = stage.communicate(timeout=300)
    assert stage.returncode == 0, stderr
    assert still_running and 1 <= during["epoch"] < 300
    assert json.loads(metrics.read_text())["epoch"] == 300


def long_chunk_command(stages, chunk: str = "long") -> list[str]:
    return [sys.executable, str(ROOT / "src/train.py"), "--params", str(stages.params_path), "--chunk", chunk,
            "--parent", str(stages.checkpoint("init")), *stages.split_args("train", "val"),
            "--out", str(stages.checkpoint(chunk)), "--metrics", str(stages.root / f"metrics/{chunk}.json"),
            "--snapshot", str(stages.root / f".resume/{chunk}/snapshot.pt")]


def test_a_second_trainer_of_the_same_chunk_stops_at_once_and_touches_nothing(stages, params):
    params["train"]["chunks"]["long"] = {"from": "init", "epochs": 300}
    params["train"]["snapshot_every_steps"] = 25
    write_params(stages.params_path, params)
    first = subprocess.Popen(long_chunk_command(stages), env=project_env(), stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, text=True)
    snapshot = stages.root / ".resume/long/snapshot.pt"
    try:
        wait_for(lambda: snapshot.exists() or first.poll() is not None, "the first trainer's snapshot")
        second = subprocess.run(long_chunk_command(stages), env=project_env(), capture_output=True, text=True)
        assert first.poll() is None, "the first trainer ended before the second started"
    finally:
        first.terminate()
        _, first_err = first.communicate(timeout=120)
    assert second.returncode == 2
    assert second.stderr.startswith(f"error: train@long: another trainer (pid {first.pid}) is training this chunk")
    assert second.stderr.count("\n") == 1
    assert first.returncode == 143 and "snapshot written" in first_err  # the first one was never disturbed
    assert snapshot.exists() and not stages.checkpoint("long").exists()
