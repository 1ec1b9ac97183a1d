"""Stage evaluate scores only checkpoints that params.yaml, as it is now, would have produced."""

import math
import shutil

import pytest
import torch

from chunktrain import checkpoint as ckpt
from chunktrain.checkpoint import CheckpointError
from chunktrain.errors import PipelineError
from chunktrain.testing import Stages, write_params


def test_a_foreign_checkpoint_trained_with_another_lr_is_refused(tmp_path, stages, params):
    stages.train("c1", "init")
    stages.train("c2", "c1")
    stages.train("c3", "c2")
    other_params = {**params, "train": {**params["train"], "lr": 0.02}}
    other = Stages(tmp_path / "other", other_params)
    other.generate()
    other.init()
    shutil.copy(other.train("c1", "init"), stages.checkpoint("c1"))  # same data, same init, another lr
    with pytest.raises(CheckpointError) as raised:
        stages.evaluate()
    assert str(raised.value) == (f"{stages.checkpoint('c1')} does not match params.yaml: lr is 0.02 in the file,"
                                 " 0.01 in params.yaml; run `dvc repro train@c1` to rebuild it")
    assert not (stages.root / "metrics/test").exists()


def test_evaluate_alone_after_editing_a_chunk_refuses_its_old_checkpoint(stages, params):
    stages.train("c1", "init")
    stages.train("c2", "c1")
    stages.train("c3", "c2")
    params["train"]["chunks"]["c2"]["epochs"] = 3  # as `dvc repro -s evaluate` would see it
    write_params(stages.params_path, params)
    with pytest.raises(CheckpointError, match=r"c2.pt does not match params.yaml: epochs is 2 in the file, 3 in"
                                              r" params.yaml; run `dvc repro train@c2` to rebuild it"):
        stages.evaluate()


def test_a_checkpoint_with_non_finite_weights_is_not_scored(stages):
    stages.train("c1", "init")
    stages.train("c2", "c1")
    path = stages.train("c3", "c2")
    checkpoint = dict(ckpt.load_checkpoint(path, rebuild="-"))
    checkpoint[ckpt.MODEL_STATE] = {key: torch.full_like(value, math.nan)
                                    for key, value in checkpoint[ckpt.MODEL_STATE].items()}
    ckpt.save_checkpoint(checkpoint, path)
    with pytest.raises(PipelineError, match=r"c3.pt gives a non-finite test loss \(nan\)"):
        stages.evaluate()
    assert not (stages.root / "metrics/test/c3.json").exists()
