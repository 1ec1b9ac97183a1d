"""A chunk on several processes (DDP under torchrun, gloo on CPU): real `dvc repro`, real torchrun, real kills."""

import shutil

import pytest
import torch

from chunktrain import checkpoint as ckpt
from chunktrain.checkpoint import load_checkpoint
from chunktrain.distributed import check_nproc
from chunktrain.errors import PipelineError
from chunktrain.model import build_model
from chunktrain.params import load_params
from chunktrain.testing import Project, ran, sha256, write_params

# 2 processes reduce in another order than 1, so they agree to rounding, not bit for bit (README states this).
LOSS_RTOL = 1e-5
WEIGHT_ATOL = 1e-4


@pytest.fixture(scope="module")
def ddp(reproduced, tmp_path_factory):
    """The reproduced tiny pipeline plus d2 (2 processes, from the 1-process c1) and e3 (1 process, from d2).

    d2 is c2 on 2 processes: the same parent, epochs and global batch size.
    """
    project = Project(tmp_path_factory.mktemp("ddp") / "repo")
    shutil.copytree(reproduced[0].path, project.path, symlinks=True, ignore=shutil.ignore_patterns("tmp"))

    def add_chunks(params):
        params["train"]["snapshot_every_steps"] = 10  # reruns only validate, which writes the same marker
        params["train"]["chunks"].update(d2={"from": "c1", "epochs": 2, "nproc": 2}, e3={"from": "d2", "epochs": 1})
    project.edit_params(add_chunks)
    return project, project.dvc("repro")


@pytest.mark.slow
def test_a_two_process_chunk_runs_through_dvc_and_matches_one_process(ddp):
    project, output = ddp
    assert ran(output) == {"validate", "train@d2", "train@e3", "evaluate"}
    assert "train@d2: epochs 3..4 from data/checkpoints/c1.pt, lr 0.01, batch size 64, 2 processes" in output
    c2, d2 = (load_checkpoint(project.path / f"data/checkpoints/{name}.pt", rebuild="-") for name in ("c2", "d2"))
    for one, two in zip(c2[ckpt.HISTORY], d2[ckpt.HISTORY]):
        assert two["epoch"] == one["epoch"]
        assert two["train_loss"] == pytest.approx(one["train_loss"], rel=LOSS_RTOL)
        assert two["val_loss"] == pytest.approx(one["val_loss"], rel=LOSS_RTOL)
    assert d2[ckpt.TRAIN_SETTINGS] == c2[ckpt.TRAIN_SETTINGS]
    model = build_model(d2[ckpt.MODEL_CONFIG])
    model.load_state_dict(d2[ckpt.MODEL_STATE])  # one plain process loads what 2 ranks trained
    for name, tensor in model.state_dict().items():
        assert torch.allclose(tensor, c2[ckpt.MODEL_STATE][name], rtol=0, atol=WEIGHT_ATOL), name


@pytest.mark.slow
def test_chunks_continue_across_process_counts(ddp):
    project, _ = ddp
    e3 = load_checkpoint(project.path / "data/checkpoints/e3.pt", rebuild="-")
    assert [(r["epoch"], r["chunk"]) for r in e3[ckpt.HISTORY]] == [(1, "c1"), (2, "c1"), (3, "d2"), (4, "d2"),
                                                                      (5, "e3")]
    assert e3[ckpt.PARENT_SHA256] == sha256(project.path / "data/checkpoints/d2.pt")
    d2 = load_checkpoint(project.path / "data/checkpoints/d2.pt", rebuild="-")
    assert d2[ckpt.PARENT_SHA256] == sha256(project.path / "data/checkpoints/c1.pt")


@pytest.mark.slow
def test_a_rank_that_dies_fails_the_stage_and_a_rerun_resumes_bit_identical(ddp):
    project, _ = ddp
    checkpoint = project.path / "data/checkpoints/d2.pt"
    uninterrupted = sha256(checkpoint)
    killed = project.run("dvc", "repro", "--force", "--single-item", "train@d2", check=False,
                         env={"CHUNKTRAIN_KILL_AT": "step:35", "CHUNKTRAIN_KILL_RANK": "1"})
    assert killed.returncode != 0
    assert "error: train@d2: rank 1 of 2 was killed by SIGKILL; the chunk failed and wrote no checkpoint" \
        in killed.stdout
    assert "Traceback" not in killed.stdout
    assert not checkpoint.exists()
    assert not list(checkpoint.parent.glob(".*.tmp"))

    resumed = project.dvc("repro", "--force", "--single-item", "train@d2")
    assert "resuming d2 from step 30 (epoch 4)" in resumed  # rank 0's last snapshot before the kill
    assert sha256(checkpoint) == uninterrupted  # the same 2 processes give the same bytes
    assert ran(project.dvc("repro")) == set()


@pytest.mark.parametrize("n_rows, batch_size, nproc, smallest", [
    (1600, 64, 65, 64),
    (1600, 60, 41, 40),  # the last batch holds 1600 % 60 = 40 rows
    (10, 64, 11, 10),  # a single batch smaller than batch_size
])
def test_more_processes_than_rows_in_a_batch_are_refused(n_rows, batch_size, nproc, smallest):
    check_nproc(smallest, n_rows, batch_size, "train.nproc")
    with pytest.raises(PipelineError, match=rf"^train.nproc: {nproc} processes is more than the {smallest} row"):
        check_nproc(nproc, n_rows, batch_size, "train.nproc")


@pytest.mark.slow
def test_too_many_processes_fail_the_stage_before_torchrun_starts(stages, params):
    params["train"]["chunks"]["c1"]["nproc"] = 65
    write_params(stages.params_path, params)
    with pytest.raises(PipelineError, match=r"^train.chunks.c1.nproc: 65 processes is more than the 64 row\(s\)"
                                            r" of the smallest global batch \(1600 training rows in batches of 64\)"):
        stages.train("c1", "init")
    assert not stages.checkpoint("c1").exists()


@pytest.mark.parametrize("key, value, message", [
    ("nproc", 0, "train.nproc: Input should be greater than 0, got 0"),
    ("device", "tpu", "train.device: Input should be 'auto', 'cpu' or 'cuda', got 'tpu'"),
])
def test_bad_nproc_or_device_is_refused(tmp_path, params, key, value, message):
    params["train"][key] = value
    with pytest.raises(PipelineError, match=message):
        load_params(write_params(tmp_path / "params.yaml", params))
