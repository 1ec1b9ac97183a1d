import subprocess
import time
import sys

import pytest
import yaml

from chunktrain.errors import PipelineError
from chunktrain.params import Params, load_params, read_yaml
from chunktrain.testing import ROOT, project_env, write_params


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
    # non-finite and oversized values
    ("data.noise", float("inf"), "data.noise: Input should be a finite number, got inf"),
    ("train.lr", float("nan"), "train.lr: Input should be a finite number, got nan"),
    ("train.chunks.c2.weight_decay", float("inf"), "train.chunks.c2.weight_decay: Input should be a finite number"),
    ("model.hidden", [10**6, 10**6], "model.hidden: [1000000, 1000000] makes 1,000,007,000,001 parameters"),
    ("data.n_samples", 10**12, "data.n_samples * (data.n_features + 1) must be at most 2,000,000,000 values"),
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
                             "--test", "c", "--transform", "d"], cwd=tmp_path, env=project_env(), capture_output=True, text=True)
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


def _params_text(params: dict, **replace: str) -> str:
    """params written by PyYAML, then the given `key: value` lines swapped for raw YAML text."""
    text = yaml.safe_dump(params, sort_keys=False)
    for old, new in replace.items():
        assert old in text
        text = text.replace(old, new)
    return text


@pytest.mark.parametrize("raw, value", [
    ("010", 10),  # YAML 1.1 (PyYAML) reads octal 8
    ("0o10", 8),  # YAML 1.1 reads a string
    ("1_0", 10),
])
def test_params_are_read_as_dvc_reads_them_yaml_1_2(tmp_path, params, raw, value):
    from dvc.utils.serialize import parse_yaml

    text = _params_text(params, **{"epochs: 2\n": f"epochs: {raw}\n"})
    (tmp_path / "params.yaml").write_text(text)
    assert load_params(tmp_path / "params.yaml").train.chunks["c1"].epochs == value
    assert parse_yaml(text, "params.yaml")["train"]["chunks"]["c1"]["epochs"] == value


@pytest.mark.parametrize("raw", ["010", "0o10", "1:30", "yes", "on", "No", "1e-3", ".5", "0x1F", "~", "2001-12-14",
                                 "'010'", "[1, {a: b}]"])
def test_read_yaml_is_dvcs_loader_value_for_value(raw):
    from dvc.utils.serialize import parse_yaml

    text = f"key: {raw}\n"
    assert read_yaml(text) == parse_yaml(text, "params.yaml")


@pytest.mark.parametrize("raw, message", [
    ("1:30", "train.chunks.c1.epochs: Input should be a valid integer, got '1:30'"),  # YAML 1.1: 90
    ("yes", "train.chunks.c1.epochs: Input should be a valid integer, got 'yes'"),  # YAML 1.1: True
    ("true", "train.chunks.c1.epochs: Input should be a valid integer, got True"),
])
def test_values_yaml_1_1_would_read_otherwise_are_refused(tmp_path, params, raw, message):
    (tmp_path / "params.yaml").write_text(_params_text(params, **{"epochs: 2\n": f"epochs: {raw}\n"}))
    with pytest.raises(PipelineError) as raised:
        load_params(tmp_path / "params.yaml")
    assert message in str(raised.value)


def test_a_chunk_named_yes_is_a_string_as_in_dvc(tmp_path, params):
    (tmp_path / "params.yaml").write_text(_params_text(params, **{"  c3:": "  yes:"}))
    assert list(load_params(tmp_path / "params.yaml").train.chunks) == ["c1", "c2", "yes"]


def test_loading_params_does_not_import_dvc(tmp_path, params):
    write_params(tmp_path / "params.yaml", params)
    code = "import sys; from chunktrain.params import load_params; load_params('params.yaml'); print('dvc' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True,
                            env={**project_env(), "PYTHONPATH": str(ROOT / "src")})
    assert result.stdout == "False\n", result.stderr


@pytest.mark.parametrize("name", ["", "c 2", "c9;touch x;#", "$(touch x)", "../../victim", "../bench", "c/2", "-c",
                                  "x" * 65, "c\n2"])
def test_a_chunk_name_that_could_reach_a_shell_or_a_path_is_refused(tmp_path, params, name):
    params["train"]["chunks"][name] = {"from": "c1", "epochs": 1}
    with pytest.raises(PipelineError) as raised:
        load_params(write_params(tmp_path / "params.yaml", params))
    assert "train.chunks: name " in str(raised.value)
    assert "\n" not in str(raised.value) and len(str(raised.value)) < 300


def test_a_yaml_bomb_is_refused_quickly_with_a_short_message(tmp_path, params):
    lines = ["a0: &a0 [1, 1, 1, 1, 1, 1, 1, 1, 1]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 9)]  # 9**9 integers as a tree
    text = "\n".join(lines) + "\n" + _params_text(params, **{"hidden:\n  - 16\n": "hidden: *a8\n"})
    (tmp_path / "params.yaml").write_text(text)
    started = time.perf_counter()
    with pytest.raises(PipelineError) as raised:
        load_params(tmp_path / "params.yaml")
    assert time.perf_counter() - started < 5
    message = str(raised.value)
    assert message.startswith(f"{tmp_path / 'params.yaml'}: model.hidden.0: Input should be a valid integer, got [")
    assert message.endswith(" more") and len(message) < 600 and "\n" not in message


def test_a_huge_value_is_truncated_in_the_message(tmp_path, params):
    params["train"]["optimizer"] = "x" * 100_000
    with pytest.raises(PipelineError) as raised:
        load_params(write_params(tmp_path / "params.yaml", params))
    assert len(str(raised.value)) < 300


def test_out_of_memory_in_a_stage_is_one_line_and_exit_2(capsys):
    from chunktrain.errors import run_stage

    def main():
        raise MemoryError("Unable to allocate 7.45 TiB for an array with shape (1000000000000,)")

    with pytest.raises(SystemExit) as exited:
        run_stage(main)
    assert exited.value.code == 2
    assert capsys.readouterr().err == ("error: out of memory (Unable to allocate 7.45 TiB for an array with shape"
                                       " (1000000000000,)); lower data.n_samples or model.hidden in params.yaml\n")


def test_the_validate_stage_refuses_a_bad_name_in_one_line_and_writes_no_marker(tmp_path, params):
    params["train"]["chunks"]["c 2"] = {"from": "c1", "epochs": 1}
    write_params(tmp_path / "params.yaml", params)
    result = subprocess.run([sys.executable, str(ROOT / "src/validate.py"), "--out", "ok", "--chunk-params", "chunks"],
                            cwd=tmp_path, env=project_env(), capture_output=True, text=True)
    assert result.returncode == 2
    assert result.stderr == ("error: params.yaml: train.chunks: name 'c 2' must match [A-Za-z][A-Za-z0-9_-]{0,63}"
                             " and not be 'init'\n")
    assert not (tmp_path / "ok").exists() and not (tmp_path / "chunks").exists()
