import subprocess
import sys

import pytest

from chunktrain.errors import PipelineError
from chunktrain.params import Params, load_params
from helpers import ROOT, project_env, write_params


def test_valid_params_load_with_chunk_overrides(tmp_path, params):
    params["train"]["chunks"]["c2"]["lr"] = 0.0005
    loaded = load_params(write_params(tmp_path / "params.yaml", params))
    assert loaded.train.settings("c2").lr == 0.0005
    assert loaded.train.settings("c1").lr == 0.01
    assert loaded.train.lineage("c3") == ["c1", "c2", "c3"]
    assert loaded.train.leaves() == ["c3"]


def test_exponent_floats_read_as_numbers_like_dvc_reads_them(tmp_path):
    (tmp_path / "params.yaml").write_text((ROOT / "params.yaml").read_text().replace("lr: 0.001", "lr: 1e-3"))
    assert load_params(tmp_path / "params.yaml").train.lr == 0.001


def test_the_shipped_params_are_valid():
    assert load_params(ROOT / "params.yaml").train.leaves() == ["c3_cool"]


def _set(params, path, value):
    *parents, last = path.split(".")
    node = params
    for key in parents:
        node = node[key]
    node[last] = value


@pytest.mark.parametrize("key, value, message", [
    ("train.chunks.c2.epochs", 0, "train.chunks.c2.epochs: Input should be greater than 0, got 0"),
    ("train.chunks.c2.epochs", "3", "train.chunks.c2.epochs: Input should be a valid integer, got '3'"),
    ("train.lr", -0.1, "train.lr: Input should be greater than 0, got -0.1"),
    ("train.chunks.c1.lr", 0, "train.chunks.c1.lr: Input should be greater than 0, got 0"),
    ("train.batch_size", 0, "train.batch_size: Input should be greater than 0, got 0"),
    ("train.batch_size", True, "train.batch_size: Input should be a valid integer, got True"),
    ("train.optimizer", "lbfgs", "train.optimizer: Input should be 'sgd', 'adam' or 'adamw', got 'lbfgs'"),
    ("data.val_fraction", 1.5, "data.val_fraction: Input should be less than 1, got 1.5"),
    ("data.test_fraction", 0, "data.test_fraction: Input should be greater than 0, got 0"),
    ("data.val_fraction", 0.95, "data.val_fraction + data.test_fraction must be below 1"),
    ("data.n_samples", 5, "data.n_samples: 5 leaves a split empty"),
    ("model.hidden", [16, 0], "model.hidden.1: Input should be greater than 0, got 0"),
    ("train.learning_rate", 0.1, "train.learning_rate: unknown key"),
    ("train.chunks.c1.epoch", 3, "train.chunks.c1.epoch: unknown key"),
    ("train.chunks.c2.from", "c9", "train.chunks.c2.from: 'c9' names no chunk"),
    ("train.chunks.c1.from", "c3", "train.chunks.c1.from: the chain c1 -> c3 -> c2 -> c1 is a cycle"),
    ("train.chunks.c1.from", "c1", "train.chunks.c1.from: the chain c1 -> c1 is a cycle"),
    ("train.chunks.init", {"from": "c1", "epochs": 1}, "train.chunks: name 'init'"),
    ("train.chunks", {}, "train.chunks: Dictionary should have at least 1 item"),
])
def test_bad_params_name_the_key_and_the_value(tmp_path, params, key, value, message):
    _set(params, key, value)
    with pytest.raises(PipelineError) as raised:
        load_params(write_params(tmp_path / "params.yaml", params))
    assert message in str(raised.value)


def test_missing_key_and_bad_yaml_are_reported(tmp_path, params):
    del params["train"]["weight_decay"]
    with pytest.raises(PipelineError, match="train.weight_decay: missing key"):
        load_params(write_params(tmp_path / "params.yaml", params))
    (tmp_path / "broken.yaml").write_text("train: [unclosed\n")
    with pytest.raises(PipelineError, match="broken.yaml is not valid YAML"):
        load_params(tmp_path / "broken.yaml")
    with pytest.raises(PipelineError, match="nowhere.yaml not found"):
        load_params(tmp_path / "nowhere.yaml")


def test_a_stage_reports_bad_params_as_one_line_and_exit_2(tmp_path, params):
    params["train"]["lr"] = "fast"
    write_params(tmp_path / "params.yaml", params)
    result = subprocess.run([sys.executable, str(ROOT / "src/generate.py"), "--train", "a", "--val", "b",
                             "--test", "c"], cwd=tmp_path, env=project_env(), capture_output=True, text=True)
    assert result.returncode == 2
    assert result.stderr == "error: params.yaml: train.lr: Input should be a valid number, got 'fast'\n"
    assert not (tmp_path / "a").exists()


@pytest.mark.parametrize("overrides, edit", [
    (["train.lr=0.003"], lambda p: p["train"].update(lr=0.003)),
    (["+train.chunks.c4={from: c3, epochs: 2}"], lambda p: p["train"]["chunks"].update(c4={"from": "c3", "epochs": 2})),
])
def test_the_shipped_params_survive_dvc_exp_run_set_param(tmp_path, overrides, edit):
    from dvc.utils.hydra import apply_overrides  # what `dvc exp run -S` rewrites params.yaml with

    path = tmp_path / "params.yaml"
    path.write_text((ROOT / "params.yaml").read_text())
    apply_overrides(str(path), overrides)
    expected = load_params(ROOT / "params.yaml").model_dump(by_alias=True)
    edit(expected)
    assert load_params(path) == Params.model_validate(expected)
    for line in ("# hidden layer widths", "# null: no step-based snapshots", "# one stage train@<name> each"):
        assert line in path.read_text()  # the comments that give the keys their meaning stay
