"""A chunk on several processes (DDP under torchrun, gloo on CPU), through the train stage on temp paths."""

import copy

import pytest
import torch

from chunktrain.recipe import checkpoint as ckpt
from chunktrain.recipe.checkpoint import load_checkpoint
from chunktrain.params import Params
from chunktrain.recipe.errors import PipelineError
from chunktrain.recipe.model import build_model
from chunktrain.recipe.parallel import check_nproc
from chunktrain.testing import TINY_PARAMS, new_project, sha256, write_params

# 2 processes reduce in another order than 1, so they agree to rounding, not bit for bit (README states this).
LOSS_RTOL = 1e-5
WEIGHT_ATOL = 1e-4


@pytest.mark.parametrize("n_rows, batch_size, grad_accum, nproc, smallest", [
    (1600, 64, 1, 65, 64),
    (1600, 60, 1, 41, 40),  # the last batch holds 1600 % 60 = 40 rows
    (10, 64, 1, 11, 10),  # a single batch smaller than batch_size
    (1600, 64, 2, 33, 64),  # global batches of 128 rows, the last of 64: 32 processes x 2 micro-batches of 1 row
])
def test_more_processes_than_rows_in_a_batch_are_refused(n_rows, batch_size, grad_accum, nproc, smallest):
    settings = Params.model_validate(TINY_PARAMS).train.settings("c1").model_copy(
        update={"batch_size": batch_size, "grad_accum": grad_accum})
    check_nproc(smallest // grad_accum, n_rows, settings, "train.nproc")
    with pytest.raises(PipelineError, match=rf"^train.nproc: {nproc} processes x {grad_accum} micro-batches is more"
                                            rf" than the {smallest} row"):
        check_nproc(nproc, n_rows, settings, "train.nproc")


def test_too_many_processes_fail_the_stage_before_torchrun_starts(stages, params):
    params["train"]["chunks"]["c1"]["nproc"] = 65
    write_params(stages.params_path, params)
    with pytest.raises(PipelineError, match=r"^train@c1: nproc: 65 processes x 1 micro-batches is more than the 64"
                                            r" row\(s\) of the smallest global batch \(1600 training rows in steps"
                                            r" of 64\)"):
        stages.train("c1")
    assert not stages.checkpoint("c1").exists()


@pytest.fixture(scope="module")
def ddp(tmp_path_factory):
    """The tiny tree plus d2 (c2 on 2 processes: the same parent, epochs and global batch) and e3 (1 process, from
    d2); snapshots every 10 steps."""
    params = copy.deepcopy(TINY_PARAMS)
    params["train"].update(snapshot_every_steps=10, snapshot_every_seconds=None)
    params["train"]["chunks"].update(d2={"from": "c1", "epochs": 2, "nproc": 2}, e3={"from": "d2", "epochs": 1})
    stages = new_project(tmp_path_factory.mktemp("ddp"), params, git=False)
    stages.generate()
    stages.init()
    for name in ("c1", "c2", "d2", "e3"):
        stages.train(name)
    return stages


@pytest.mark.slow
def test_a_two_process_chunk_matches_one_process_to_rounding(ddp):
    c2, d2 = (load_checkpoint(ddp.checkpoint(name)) for name in ("c2", "d2"))
    assert [r["epoch"] for r in d2[ckpt.HISTORY]] == [r["epoch"] for r in c2[ckpt.HISTORY]] == [1, 2, 3, 4]
    for one, two in zip(c2[ckpt.HISTORY], d2[ckpt.HISTORY]):
        assert two["train_loss"] == pytest.approx(one["train_loss"], rel=LOSS_RTOL)
        assert two["val_loss"] == pytest.approx(one["val_loss"], rel=LOSS_RTOL)
    assert d2[ckpt.GLOBAL_STEP] == c2[ckpt.GLOBAL_STEP]  # the global batch size is unchanged
    model = build_model(d2[ckpt.MODEL_CONFIG])
    model.load_state_dict(d2[ckpt.MODEL_STATE])  # one plain process loads what 2 ranks trained
    for name, tensor in model.state_dict().items():
        assert torch.allclose(tensor, c2[ckpt.MODEL_STATE][name], rtol=0, atol=WEIGHT_ATOL), name


@pytest.mark.slow
def test_chunks_continue_across_process_counts(ddp):
    c1, d2, e3 = (load_checkpoint(ddp.checkpoint(name)) for name in ("c1", "d2", "e3"))
    assert [(r["epoch"], r["chunk"]) for r in e3[ckpt.HISTORY]] == [(1, "c1"), (2, "c1"), (3, "d2"), (4, "d2"),
                                                                      (5, "e3")]
    assert e3[ckpt.LINEAGE]["parent"] == d2[ckpt.LINEAGE]["id"] and d2[ckpt.LINEAGE]["parent"] == c1[ckpt.LINEAGE]["id"]
    assert d2[ckpt.LINEAGE]["spec"]["nproc"] == 2


@pytest.mark.slow
def test_a_rank_that_dies_fails_the_stage_and_a_rerun_resumes_bit_identical(ddp, monkeypatch, capfd):
    checkpoint = ddp.checkpoint("d2")
    uninterrupted = sha256(checkpoint)
    with monkeypatch.context() as patch:
        patch.setenv("CHUNKTRAIN_KILL_AT", "step:35")
        patch.setenv("CHUNKTRAIN_KILL_RANK", "1")
        with pytest.raises(PipelineError, match=r"^train@d2: rank 1 of 2 was killed by SIGKILL; the chunk failed and"
                                                r" wrote no checkpoint$"):
            ddp.train("d2")
    assert not checkpoint.exists() and not list(checkpoint.parent.glob(".*.tmp"))
    capfd.readouterr()
    ddp.train("d2")
    assert "resuming d2 from step 30 of the chunk" in capfd.readouterr().out  # rank 0's last snapshot before the kill
    assert sha256(checkpoint) == uninterrupted  # the same 2 processes give the same bytes
