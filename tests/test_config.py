"""params.yaml's schema, read as DVC reads it, and the spec files stage plan writes from it."""

import copy
import json
import os
import subprocess
import sys
import time

import pytest
import torch
import yaml

import plan
from chunktrain.data.specs import SYNTHETIC_SOURCE
from chunktrain.params import Params, load_params, read_yaml
from chunktrain.params import plan as plan_specs
from chunktrain.recipe.specs import BUILT_IN_MODELS, ChunkSpec
from chunktrain.recipe.errors import PipelineError, run_stage
from chunktrain.testing import ROOT, TINY_TEXT_PARAMS, project_env, run, write_params


def test_valid_params_load_with_chunk_overrides(tmp_path, params):
    params["train"]["chunks"]["c2"].update(lr=0.0005, batch_size=32)
    loaded = load_params(write_params(tmp_path / "params.yaml", params))
    assert (loaded.train.settings("c2").lr, loaded.train.settings("c2").batch_size) == (0.0005, 32)
    assert (loaded.train.settings("c1").lr, loaded.train.settings("c1").batch_size) == (0.01, 64)
    assert loaded.train.lineage("c3") == ["c1", "c2", "c3"]


def test_the_shipped_params_are_valid():
    loaded = load_params(ROOT / "params.yaml")
    assert loaded.data.source == "data/raw/synthetic.parquet" and "c3_cool" in loaded.train.chunks


def _set(params, path, value):
    *parents, last = path.split(".")
    node = params
    for key in parents:
        node = node[key]
    node[last] = value


@pytest.mark.parametrize("key, value, message", [
    ("seed", -1, "seed: Input should be greater than or equal to 0, got -1"),
    ("seed", 2**32, "seed: Input should be less than 4294967296, got 4294967296"),
    ("synthetic.n_samples", 0, "synthetic.n_samples: Input should be greater than 0, got 0"),
    ("synthetic.n_features", "4", "synthetic.n_features: Input should be a valid integer, got '4'"),
    ("synthetic.noise", -0.1, "synthetic.noise: Input should be greater than or equal to 0, got -0.1"),
    ("synthetic.noise", float("inf"), "synthetic.noise: Input should be a finite number, got inf"),
    ("synthetic.rows", 10, "synthetic.rows: unknown key"),
    ("data.source", "/etc/table.csv", "data.source: '/etc/table.csv' must be the relative path of a .csv or .parquet"
                                      " table, a .txt text, or a folder of .txt texts, inside the repo"),
    ("data.source", "../outside.csv", "data.source: '../outside.csv' must be the relative path"),
    ("data.source", "data/raw/synthetic.parquet.bak", "data.source: 'data/raw/synthetic.parquet.bak' must be the"),
    ("data.source", ".", "data.source: '.' must be the relative path"),  # the repo: a folder of the pipeline's outputs
    ("data.source", "table.xlsx", "data.source: 'table.xlsx' must be the relative path"),
    ("data.val_fraction", 1.5, "data.val_fraction: Input should be less than 1, got 1.5"),
    ("data.test_fraction", 0, "data.test_fraction: Input should be greater than 0, got 0"),
    ("data.val_fraction", 0.95, "data.val_fraction + data.test_fraction must be below 1"),
    ("data.features", ["x0", "y"], "data.features: ['x0', 'y'] must name distinct columns other than the target 'y'"),
    ("data.features", ["x0", "x0"], "data.features: ['x0', 'x0'] must name distinct columns"),
    ("data.test_fraction", None, "data.test_fraction: missing key (a table needs a test split)"),
    ("data.source", "data/text.txt", "data.test_fraction, data.features and data.exclude are for tables"),
    ("model.task", "ranking",
     "model.task: Input should be 'regression', 'classification' or 'language_model', got 'ranking'"),
    ("model.task", "language_model",
     "model.task: language_model does not fit data.source 'data/raw/synthetic.parquet'"),
    ("model.arch", "my net", "model.arch: 'my net' must be a built-in model (mlp, gpt) or a builder under src/models/"
                             " as models.<module>:<function>"),
    ("model.arch", "resnet", "model.arch: 'resnet' must be a built-in model (mlp, gpt)"),
    ("model.arch", "models.x", "model.arch: 'models.x' must be a built-in model"),
    ("model.arch", "models.x:build()", "model.arch: 'models.x:build()' must be a built-in model"),
    ("model.args", [16], "model.args: Input should be a valid dictionary, got [16]"),
    ("model.hidden", [16], "model.hidden: unknown key"),  # the key before model.args
    ("train.chunks.c2.epochs", 0, "train.chunks.c2.epochs: Input should be greater than 0, got 0"),
    ("train.chunks.c2.epochs", "3", "train.chunks.c2.epochs: Input should be a valid integer, got '3'"),
    ("train.chunks.c2.steps", 10, "train.chunks.c2: give its length as epochs (not steps): the chunks of a table"
                                  " count epochs"),
    ("train.chunks.c2", {"from": "c1", "steps": 10}, "train.chunks.c2: give its length as epochs (not steps)"),
    ("train.eval_every", 10, "train.eval_every: tables measure the val loss after every epoch; remove it"),
    ("train.eval_batches", 0, "train.eval_batches: Input should be greater than 0, got 0"),
    ("train.betas", [0.9, 0.99, 0.999], "train.betas: List should have at most 2 items after validation, not 3"),
    ("train.betas", [0.9, 1.0], "train.betas.1: Input should be less than 1, got 1.0"),
    ("train.grad_clip", 0, "train.grad_clip: Input should be greater than 0, got 0"),
    ("train.grad_accum", 0, "train.grad_accum: Input should be greater than 0, got 0"),
    ("train.dtype", "float16", "train.dtype: Input should be 'float32' or 'bfloat16', got 'float16'"),
    ("train.compile", "yes", "train.compile: Input should be a valid boolean, got 'yes'"),
    ("train.decay_params", "none",
     "train.decay_params: Input should be 'matrices', 'matrices_and_embeddings' or 'all', got 'none'"),
    ("train.lr", -0.1, "train.lr: Input should be greater than 0, got -0.1"),
    ("train.lr", float("nan"), "train.lr: Input should be a finite number, got nan"),
    ("train.chunks.c1.lr", 0, "train.chunks.c1.lr: Input should be greater than 0, got 0"),
    ("train.chunks.c2.weight_decay", float("inf"), "train.chunks.c2.weight_decay: Input should be a finite number"),
    ("train.batch_size", 0, "train.batch_size: Input should be greater than 0, got 0"),
    ("train.batch_size", True, "train.batch_size: Input should be a valid integer, got True"),
    ("train.optimizer", "lbfgs", "train.optimizer: Input should be 'sgd', 'adam' or 'adamw', got 'lbfgs'"),
    ("train.nproc", 0, "train.nproc: Input should be greater than 0, got 0"),
    ("train.chunks.c2.nproc", 0, "train.chunks.c2.nproc: Input should be greater than 0, got 0"),
    ("train.device", "tpu", "train.device: Input should be 'auto', 'cpu' or 'cuda', got 'tpu'"),
    ("train.snapshot_every_seconds", 0, "train.snapshot_every_seconds: Input should be greater than 0, got 0"),
    ("train.learning_rate", 0.1, "train.learning_rate: unknown key"),
    ("train.chunks.c1.epoch", 3, "train.chunks.c1.epoch: unknown key"),
    ("train.chunks.c2.from", "c9", "train.chunks.c2.from: 'c9' names no chunk"),
    ("train.chunks.c1.from", "c3", "train.chunks.c1.from: the chain c1 -> c3 -> c2 -> c1 is a cycle"),
    ("train.chunks.c1.from", "c1", "train.chunks.c1.from: the chain c1 -> c1 is a cycle"),
    ("train.chunks.init", {"from": "c1", "epochs": 1}, "train.chunks: name 'init'"),
    ("train.chunks", {}, "train.chunks: Dictionary should have at least 1 item"),
    ("train.chunks.c2.cooldown", "linear", "train.chunks.c3.from: 'c2' is a cooldown chunk, which ends its branch"),
    ("train.chunks.c2.cooldown", "step", "train.chunks.c2.cooldown: Input should be 'linear' or 'cosine'"),
    ("train.schedule.decay", "cosine", "train.schedule.total: decay cosine needs the global position where it"
                                       " reaches min_lr"),
    ("train.schedule.total", 4, "train.schedule.total: 4.0 is used only by decay cosine or linear"),
    ("train.schedule", {"decay": "linear", "warmup": 3, "total": 2},
     "train.schedule.total: 2.0 must be after the warmup's end (warmup 3.0)"),
    ("train.schedule.warmup", -1, "train.schedule.warmup: Input should be greater than or equal to 0"),
    ("train.schedule.warmup_epochs", 1, "train.schedule.warmup_epochs: unknown key"),  # the key before warmup
    ("train.schedule.min_lr", 0.05, "train.schedule.min_lr: 0.05 must be below the lr of chunk c1 (0.01)"),
])
def test_bad_params_name_the_key_and_the_value(tmp_path, params, key, value, message):
    _set(params, key, value)
    assert message in _refusal(tmp_path, params)


@pytest.mark.parametrize("key, value, message", [
    ("train.chunks.c1.epochs", 2, "train.chunks.c1: give its length as steps (not epochs): the chunks of a text"
                                  " count steps"),
    ("train.chunks.c2", {"from": "c1", "epochs": 2}, "train.chunks.c2: give its length as steps (not epochs)"),
    ("train.chunks.c2.steps", 15, "train.chunks.c2.steps: 15 must be a multiple of train.eval_every (10)"),
    ("train.eval_every", None, "train.eval_every: missing key (a text's chunks count steps"),
    ("data.test_fraction", 0.1, "data.test_fraction, data.features and data.exclude are for tables"),
    ("data.features", ["a"], "data.test_fraction, data.features and data.exclude are for tables"),
    ("model.task", "regression", "model.task: regression does not fit data.source 'data/text.txt'"),
    ("model.args.block_size", 0, "model.args.block_size: a language model needs the length of the token windows"),
    ("model.args", {"n_layer": 1, "n_head": 2, "n_embd": 16}, "model.args.block_size: a language model needs"),
    ("data.tokenizer", "bep", "data.tokenizer: 'bep' must be char or bpe, or the path of a tokenizer.json under"
                              " pretrained/ (e.g. pretrained/gpt2/tokenizer.json), did you mean 'bpe'?"),
    ("data.tokenizer", "data/tokenizer.json", "data.tokenizer: 'data/tokenizer.json' must be char or bpe, or the path"),
    ("data.tokenizer", "pretrained/../../x.json", "data.tokenizer: 'pretrained/../../x.json' must be char or bpe"),
    ("data.tokenizer", "bpe", "data.vocab_size: missing key (the tokens data.tokenizer bpe learns)"),
    ("data.vocab_size", 300, "data.vocab_size: is for data.tokenizer bpe alone"),
    ("data", {"source": "data/text.txt", "val_fraction": 0.1, "tokenizer": "bpe", "vocab_size": 256},
     "data.vocab_size: Input should be greater than or equal to 257, got 256"),
    ("data", {"source": "data/text.txt", "val_fraction": 0.1, "tokenizer": "bpe", "vocab_size": 10**7},
     "data.vocab_size: Input should be less than or equal to 1000000, got 10000000"),
])
def test_bad_text_params_name_the_key_and_the_value(tmp_path, key, value, message):
    params = copy.deepcopy(TINY_TEXT_PARAMS)
    _set(params, key, value)
    assert message in _refusal(tmp_path, params)


def test_a_tokenizer_for_a_table_is_refused(tmp_path, params):
    params["data"]["tokenizer"] = "bpe"
    assert "data.tokenizer and data.vocab_size are for a .txt text; a table has no tokens" in _refusal(tmp_path, params)


def test_a_missing_tokenizer_json_stops_plan_with_one_line_and_exit_2(tmp_path):
    params = copy.deepcopy(TINY_TEXT_PARAMS)
    params["data"]["tokenizer"] = "pretrained/gpt2/tokenizer.json"
    (tmp_path / "data").mkdir()
    (tmp_path / "data/text.txt").write_text("some text\n")
    write_params(tmp_path / "params.yaml", params)
    done = subprocess.run([sys.executable, ROOT / "src/plan.py", "--out", "data/plan"], cwd=tmp_path,
                          capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT / "src")})
    assert done.returncode == 2 and not (tmp_path / "data/plan").exists()
    assert done.stderr == "error: data.tokenizer: 'pretrained/gpt2/tokenizer.json' not found\n"


def _refusal(tmp_path, params: dict) -> str:
    """The one-line error that loading `params` gives; it names the file first."""
    with pytest.raises(PipelineError) as raised:
        load_params(write_params(tmp_path / "params.yaml", params))
    assert str(raised.value).startswith(f"{tmp_path / 'params.yaml'}: ")
    assert "\n" not in str(raised.value)
    return str(raised.value)


def test_the_built_in_model_names_plan_accepts_are_the_builders_init_has():
    """Stage plan checks model.arch without importing torch, so recipe/specs.py names the builders model.py holds."""
    from chunktrain.recipe.model import ARCHITECTURES

    assert list(BUILT_IN_MODELS) == list(ARCHITECTURES)


def test_text_params_count_steps_in_rounds_of_eval_every(tmp_path):
    loaded = load_params(write_params(tmp_path / "params.yaml", copy.deepcopy(TINY_TEXT_PARAMS)))
    settings = loaded.train.settings("c2")
    assert (loaded.task, settings.epochs, settings.steps, settings.rounds) == ("language_model", None, 20, 2)


@pytest.mark.parametrize("write, message", [
    (lambda path, params: write_params(path, {**params, "synthetic": {"n_samples": 10, "noise": 0.1}}),
     "params.yaml: synthetic.n_features: missing key"),
    (lambda path, params: path.write_text("train: [unclosed\n"), "params.yaml is not valid YAML"),
    (lambda path, params: None, "params.yaml not found"),
])
def test_a_missing_key_bad_yaml_or_no_file_is_one_line(tmp_path, params, write, message):
    write(tmp_path / "params.yaml", params)
    with pytest.raises(PipelineError, match=message):
        load_params(tmp_path / "params.yaml")


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
    text = "\n".join(lines) + "\n" + _params_text(params, **{"features: null\n": "features: *a8\n"})
    (tmp_path / "params.yaml").write_text(text)
    started = time.perf_counter()
    with pytest.raises(PipelineError) as raised:
        load_params(tmp_path / "params.yaml")
    assert time.perf_counter() - started < 5
    message = str(raised.value)
    assert message.startswith(f"{tmp_path / 'params.yaml'}: data.features.0: Input should be a valid string, got [")
    assert message.endswith(" more") and len(message) < 600 and "\n" not in message


def test_a_huge_value_is_truncated_in_the_message(tmp_path, params):
    params["train"]["optimizer"] = "x" * 100_000
    with pytest.raises(PipelineError) as raised:
        load_params(write_params(tmp_path / "params.yaml", params))
    assert len(str(raised.value)) < 300


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


def test_exponent_floats_and_a_chunk_named_yes_read_as_in_dvc(tmp_path, params):
    text = _params_text(params, **{"  c3:": "  yes:", "lr: 0.01\n": "lr: 1e-2\n"})
    (tmp_path / "params.yaml").write_text(text)
    loaded = load_params(tmp_path / "params.yaml")
    assert list(loaded.train.chunks) == ["c1", "c2", "yes"] and loaded.train.lr == 0.01


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
    for line in ("# mlp: hidden layer widths", "# empty: no step-based snapshots", "# one stage train@<name> each"):
        assert line in path.read_text()  # the comments that give the keys their meaning stay


@pytest.mark.parametrize("name", ["params.yaml", "docs/params-gpt.yaml"])
def test_set_param_changes_only_the_line_it_sets(tmp_path, name):
    # DVC rewrites every list and null it reads: a flow list [a, b] came back as a block list (the blank line after
    # it moved inside), a null as an empty value. So the shipped files are written the way DVC writes them.
    from dvc.utils.hydra import apply_overrides

    path = tmp_path / "params.yaml"
    path.write_text((ROOT / name).read_text())
    apply_overrides(str(path), ["seed=7"])
    before, after = (ROOT / name).read_text().splitlines(), path.read_text().splitlines()
    assert [(a, b) for a, b in zip(before, after) if a != b] == [
        (line, line.replace("seed: 0", "seed: 7")) for line in before if line.startswith("seed: 0")]
    assert len(before) == len(after)


def test_loading_params_does_not_import_dvc(tmp_path, params):
    """Every `dvc repro` runs stage plan: DVC's import time would be paid on each."""
    write_params(tmp_path / "params.yaml", params)
    code = ("import sys; from chunktrain.params import load_params; load_params('params.yaml');"
            " print('dvc' in sys.modules)")
    result = run([sys.executable, "-c", code], cwd=tmp_path, env={**project_env(), "PYTHONPATH": str(ROOT / "src")},
                 merge_stderr=False)
    assert result.stdout == "False\n", result.stderr


@pytest.mark.parametrize("error, line", [
    (PipelineError("params.yaml: train.lr: Input should be a valid number, got 'fast'"),
     "error: params.yaml: train.lr: Input should be a valid number, got 'fast'\n"),
    (MemoryError("Unable to allocate 7.45 TiB for an array with shape (1000000000000,)"),
     "error: out of memory (Unable to allocate 7.45 TiB for an array with shape (1000000000000,)); use less data,"
     " a smaller batch_size or a smaller model\n"),
    (None,  # torch's allocator: a RuntimeError, as for a text's batch_size of 1e9 (probe 18)
     "error: out of memory (can't allocate memory: you tried to allocate 40000000000000 bytes); use less data,"
     " a smaller batch_size or a smaller model\n"),
])
def test_a_stage_reports_a_users_mistake_as_one_line_and_exit_2(capsys, error, line):
    def main():
        if error is None:
            torch.empty(10**13)
        raise error

    with pytest.raises(SystemExit) as exited:
        run_stage(main)
    assert exited.value.code == 2
    assert capsys.readouterr() == ("", line)


def test_a_runtime_error_that_is_no_allocation_is_not_called_out_of_memory():
    def main():
        raise RuntimeError("mat1 and mat2 shapes cannot be multiplied")

    with pytest.raises(RuntimeError, match="mat1"):
        run_stage(main)


# Stage plan: one spec per stage, so an edit reruns exactly the stages whose spec bytes change.

CHUNKS = {"train/c1.json", "train/c2.json", "train/c3.json"}


def planned(params_path, out) -> dict[str, bytes]:
    """Run stage plan into `out`; every spec it holds then, by name."""
    plan.main(["--params", str(params_path), "--out", str(out)])
    return specs_in(out)


def specs_in(out) -> dict[str, bytes]:
    return {path.relative_to(out).as_posix(): path.read_bytes() for path in out.rglob("*.json")}


@pytest.mark.parametrize("edit, changed", [
    # c3 sets no lr of its own: it takes c2's
    (lambda p: p["train"]["chunks"]["c2"].update(lr=0.002), {"train/c2.json", "train/c3.json", "evaluate.json"}),
    (lambda p: p["train"]["chunks"]["c3"].update(lr=0.01) or p["train"]["chunks"]["c2"].update(lr=0.002),
     {"train/c2.json", "evaluate.json"}),
    (lambda p: p["train"]["chunks"]["c1"].update(epochs=3), {"train/c1.json", "evaluate.json"}),
    # how chunks run is no stage's dep: run.json, which the runner reads (runner/settings.py)
    (lambda p: p["train"].update(snapshot_every_seconds=5), {"run.json"}),
    (lambda p: p["train"].update(snapshot_every_steps=10), {"run.json"}),
    (lambda p: p["train"].update(threads=3), {"run.json"}),
    (lambda p: p["train"]["chunks"]["c2"].update(launcher="slurm"), {"run.json"}),
    (lambda p: p.update(seed=1), {"synthetic.json", "data.json", "init.json", "evaluate.json", *CHUNKS}),
    (lambda p: p["synthetic"].update(noise=0.2), {"synthetic.json"}),
    (lambda p: p["data"].update(val_fraction=0.2), {"data.json"}),
    (lambda p: p["model"]["args"].update(hidden=[8]), {"init.json", "evaluate.json", *CHUNKS}),
    (lambda p: p["train"].update(decay_params="all"), {"init.json", "evaluate.json", *CHUNKS}),
    (lambda p: p["train"].update(optimizer="sgd"), {"init.json", "evaluate.json", *CHUNKS}),
    (lambda p: p["train"].update(lr=0.02), {"evaluate.json", *CHUNKS}),
    (lambda p: p["train"]["schedule"].update(warmup=0.5), {"evaluate.json", *CHUNKS}),
    (lambda p: p["train"].update(grad_clip=1.0), {"evaluate.json", *CHUNKS}),
    (lambda p: p["train"].update(compile=True), {"evaluate.json", *CHUNKS}),  # compiled steps round differently
    (lambda p: p["train"].update(betas=[0.8, 0.99]), {"evaluate.json", *CHUNKS}),
    (lambda p: p["train"].update(eval_batches=5), set()),  # a table's val loss is on the whole val split
    (lambda p: p["train"]["chunks"].update(c4={"from": "c3", "epochs": 1}),
     {"train/c4.json", "evaluate.json", "run.json"}),
    (lambda p: p["train"]["chunks"].pop("c3"), {"train/c3.json", "evaluate.json", "run.json"}),
])
def test_a_params_edit_changes_only_the_specs_of_the_stages_it_affects(tmp_path, params, edit, changed):
    path = write_params(tmp_path / "params.yaml", params)
    before = planned(path, tmp_path / "plan")
    edit(params)
    after = planned(write_params(path, params), tmp_path / "plan")
    assert {name for name in before.keys() | after.keys() if before.get(name) != after.get(name)} == changed


@pytest.mark.parametrize("edit, changed", [
    (lambda p: p.update(seed=1), {"data.json", "init.json", "evaluate.json", *CHUNKS}),
    (lambda p: p["synthetic"].update(n_samples=50), set()),
    (lambda p: p["data"].update(source="data/other.csv"), {"data.json"}),
    (lambda p: p["data"].update(source=SYNTHETIC_SOURCE), {"synthetic.json", "data.json"}),
])
def test_the_synthetic_spec_changes_only_while_data_source_is_the_synthetic_table(tmp_path, params, edit, changed):
    """With an own table nothing reads synthesize's output: its spec is empty, and only moving data.source to or
    from the synthetic table changes it."""
    (tmp_path / "data").mkdir()
    for name in ("own.csv", "other.csv"):
        (tmp_path / "data" / name).write_text("x,y\n1,2\n")
    params["data"]["source"] = "data/own.csv"
    path = write_params(tmp_path / "params.yaml", params)
    before = planned(path, tmp_path / "plan")
    assert json.loads(before["synthetic.json"]) == {"seed": None, "synthetic": None}
    edit(params)
    after = planned(write_params(path, params), tmp_path / "plan")
    assert {name for name in before.keys() | after.keys() if before.get(name) != after.get(name)} == changed


def test_a_removed_chunk_leaves_no_spec_and_a_comment_changes_none(tmp_path, params):
    path = write_params(tmp_path / "params.yaml", params)
    before = planned(path, tmp_path / "plan")
    path.write_text("# a note\n" + path.read_text())
    assert planned(path, tmp_path / "plan") == before
    del params["train"]["chunks"]["c3"]
    planned(write_params(path, params), tmp_path / "plan")
    assert not (tmp_path / "plan/train/c3.json").exists()
    assert sorted(p.name for p in (tmp_path / "plan/train").iterdir()) == ["c1.json", "c2.json"]


def test_a_spec_reads_back_as_the_settings_params_yaml_gives(tmp_path, params):
    params["train"]["chunks"]["c2"].update(lr=0.002, nproc=2)
    planned(write_params(tmp_path / "params.yaml", params), tmp_path / "plan")
    spec = ChunkSpec.read(tmp_path / "plan/train/c2.json")
    assert (spec.name, spec.parent, spec.nproc) == ("c2", "c1", 2)
    assert (spec.settings.lr, spec.settings.batch_size) == (0.002, 64)
    assert (spec.init.seed, spec.init.model.args, spec.init.model.optimizer) == (0, {"hidden": [16]}, "adam")


def test_bad_params_stop_plan_before_it_touches_the_previous_specs(tmp_path, params):
    path = write_params(tmp_path / "params.yaml", params)
    before = planned(path, tmp_path / "plan")
    params["train"]["chunks"]["$(touch x)"] = {"from": "c1", "epochs": 1}
    with pytest.raises(PipelineError, match=r"train.chunks: name '\$\(touch x\)' must match"):
        planned(write_params(path, params), tmp_path / "plan")
    assert specs_in(tmp_path / "plan") == before


def test_plan_without_out_only_checks(tmp_path, params, capsys):
    plan.main(["--params", str(write_params(tmp_path / "params.yaml", params))])
    assert capsys.readouterr().out == f"plan: {tmp_path / 'params.yaml'}: OK\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["params.yaml"]


@pytest.mark.parametrize("text, message", [
    (None, r"cannot read .*c1.json \(No such file or directory\); run `dvc repro` \(stage plan writes it\)"),
    ('{"name": "c1"}', r"c1.json: parent: missing key; init: missing key; settings: missing key; and 2 more"),
])
def test_a_missing_or_malformed_spec_is_one_line(tmp_path, text, message):
    if text is not None:
        (tmp_path / "c1.json").write_text(text)
    with pytest.raises(PipelineError, match=message):
        ChunkSpec.read(tmp_path / "c1.json")


def test_a_chunks_unset_settings_follow_its_lineage(params):
    """lr, batch size, weight decay and processes come from the chunk continued, then from the train defaults;
    so a cooldown from a lower-lr chunk starts at that chunk's lr, not at train.lr."""
    params["train"]["chunks"] = {"c1": {"from": "init", "epochs": 1, "batch_size": 32},
                                 "c2": {"from": "c1", "epochs": 1, "lr": 0.0003, "nproc": 2},
                                 "c2_cool": {"from": "c2", "epochs": 1, "cooldown": "linear"},
                                 "d2": {"from": "c1", "epochs": 1, "weight_decay": 0.1}}
    specs = plan_specs(Params.model_validate(params))
    cool, d2 = specs["train/c2_cool.json"], specs["train/d2.json"]
    assert (cool.settings.lr, cool.settings.batch_size, cool.nproc) == (0.0003, 32, 2)
    assert (d2.settings.lr, d2.settings.batch_size, d2.settings.weight_decay, d2.nproc) == (0.01, 32, 0.1, 1)


@pytest.mark.parametrize("edit, message", [
    (lambda p: p["train"].update(lrr=0.1), "train.lrr: unknown key, did you mean 'lr'?"),
    (lambda p: p["train"]["chunks"]["c2"].update(epoch=3),
     "train.chunks.c2.epoch: unknown key, did you mean 'epochs'?"),
    (lambda p: p["train"]["schedule"].update(warmup_epochs=1), "unknown key, did you mean 'warmup'?"),
    (lambda p: p["train"]["chunks"]["c2"].update(zzz=3), "train.chunks.c2.zzz: unknown key$"),
])
def test_an_unknown_key_suggests_the_nearest_known_one(tmp_path, params, edit, message):
    edit(params)
    with pytest.raises(PipelineError, match=message):
        load_params(write_params(tmp_path / "params.yaml", params))


@pytest.mark.parametrize("edit, message", [
    (lambda p: p["train"]["chunks"]["c2"].update({"from": "c11"}),
     r"names no chunk \(nor 'init'\), did you mean 'c1'\?"),
    (lambda p: p["model"].update(arch="gtp"), r"models.<module>:<function>, did you mean 'gpt'\?"),
])
def test_a_misspelt_parent_or_architecture_suggests_the_nearest(tmp_path, params, edit, message):
    edit(params)
    with pytest.raises(PipelineError, match=message):
        load_params(write_params(tmp_path / "params.yaml", params))


@pytest.mark.parametrize("source", ["http://127.0.0.1:18080/x.csv", "ssh://user@127.0.0.1:2222/x.csv", "s3://b/x.csv",
                                    "gs://b/x.csv", "hdfs://h/x.csv", "remote://storage/x.csv", "file:///tmp/x.csv"])
def test_a_url_as_data_source_is_refused_with_how_to_bring_it_in(tmp_path, params, source):
    params["data"]["source"] = source
    with pytest.raises(PipelineError) as raised:
        load_params(write_params(tmp_path / "params.yaml", params))
    assert str(raised.value) == (f"{tmp_path / 'params.yaml'}: data.source: {source!r} is a URL; DVC would fetch it."
                                 " Bring the file into the repo with `dvc import-url URL data/own/FILE` and give"
                                 " that path")


@pytest.mark.parametrize("make, message", [
    (lambda path: None, "data.source: 'data/own/x.csv' not found"),
    (lambda path: path.mkdir(), "data.source: 'data/own/x.csv' is a directory, not a file"),
    (lambda path: os.mkfifo(path), "data.source: 'data/own/x.csv' is not a regular file (a FIFO, a device, ...)"),
    (lambda path: path.symlink_to("/dev/zero"), "data.source: 'data/own/x.csv' links to '/dev/zero', outside the"
                                                " repo; copy the file in (and `dvc add` it)"),
    (lambda path: path.symlink_to(path.parents[3] / "outside.csv"), "data.source: 'data/own/x.csv' links to '/"),
], ids=["missing", "a directory", "a FIFO", "a link to /dev/zero", "a link out of the repo"])
def test_a_source_that_is_not_a_regular_file_in_the_repo_stops_plan_before_any_spec(tmp_path, params, make,
                                                                                    message):
    repo = tmp_path / "repo"
    (repo / "data/own").mkdir(parents=True)
    (tmp_path / "outside.csv").write_text("a,y\n1,2\n")
    make(repo / "data/own/x.csv")
    params["data"]["source"] = "data/own/x.csv"
    with pytest.raises(PipelineError) as raised:
        plan.main(["--params", str(write_params(repo / "params.yaml", params)), "--out", str(repo / "data/plan")])
    assert str(raised.value).startswith(message)
    assert not (repo / "data/plan").exists()


def test_a_source_linked_inside_the_repo_and_the_synthetic_default_before_synthesize_pass(tmp_path, params):
    (tmp_path / "data/own").mkdir(parents=True)
    (tmp_path / "data/own/table.csv").write_text("a,y\n1,2\n")
    (tmp_path / "data/own/link.csv").symlink_to("table.csv")
    for source in ("data/own/link.csv", SYNTHETIC_SOURCE):  # the latter not written yet
        params["data"]["source"] = source
        plan.main(["--params", str(write_params(tmp_path / "params.yaml", params))])


def folder(path, files: dict[str, str]) -> None:
    for name, text in files.items():
        (path / name).parent.mkdir(parents=True, exist_ok=True)
        (path / name).write_text(text)


@pytest.mark.parametrize("make, message", [
    (lambda corpus, outside: folder(corpus, {"notes.md": "x\n", ".hidden.txt": "x\n", ".cache/a.txt": "x\n"}),
     "data.source: 'data/corpus' holds no .txt file (a folder's text is its .txt files, subfolders included)"),
    (lambda corpus, outside: corpus.symlink_to(outside),
     "data.source: 'data/corpus' links to '/ ... outside the repo; copy the folder in (and `dvc add` it)"),
    (lambda corpus, outside: [folder(corpus, {"a.txt": "x\n"}), (corpus / "b.txt").symlink_to(outside / "a.txt")],
     "data.source: 'data/corpus/b.txt' links to '/ ... outside the repo; copy the file in (and `dvc add` it)"),
    (lambda corpus, outside: [folder(corpus, {"a.txt": "x\n"}), (corpus / "b").symlink_to(corpus.parent)],
     "data.source: 'data/corpus/b' is a link to a folder, which DVC does not follow; copy the folder in"),
    (lambda corpus, outside: [folder(corpus, {"a.txt": "x\n"}), os.mkfifo(corpus / "b.txt")],
     "data.source: 'data/corpus/b.txt' is not a regular file (a FIFO, a device, ...)"),
    (lambda corpus, outside: corpus.write_text("x\n"),
     "data.source: 'data/corpus' is not a folder (a path without a suffix names a folder of .txt texts)"),
], ids=["no .txt", "a link out of the repo", "a text linked out", "a folder linked in it", "a FIFO", "a file"])
def test_a_folder_source_without_texts_or_with_links_out_stops_plan_in_one_line(tmp_path, make, message):
    repo, params = tmp_path / "repo", copy.deepcopy(TINY_TEXT_PARAMS)
    (repo / "data").mkdir(parents=True)
    folder(tmp_path / "outside", {"a.txt": "x\n"})
    make(repo / "data/corpus", tmp_path / "outside")
    params["data"]["source"] = "data/corpus"
    with pytest.raises(PipelineError) as raised:
        plan.main(["--params", str(write_params(repo / "params.yaml", params)), "--out", str(repo / "data/plan")])
    start, _, end = message.partition(" ... ")  # " ... ": where the message names the link's target
    assert str(raised.value).startswith(start) and str(raised.value).endswith(end) and "\n" not in str(raised.value)
    assert not (repo / "data/plan").exists()


def test_the_synthetic_source_is_where_stage_synthesize_writes():
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    assert stages["synthesize"]["outs"] == [SYNTHETIC_SOURCE]
    assert yaml.safe_load((ROOT / "params.yaml").read_text())["data"]["source"] == SYNTHETIC_SOURCE


def test_plan_notes_the_checkpoint_of_a_chunk_params_yaml_no_longer_has(tmp_path, params, capsys):
    """A removed chunk's checkpoint stays (DVC deletes no output of a stage gone from dvc.yaml): make run's check
    says so, where the user meets it."""
    folder = tmp_path / "data/checkpoints"
    folder.mkdir(parents=True)
    for name in ("init", "c1", "c4"):
        (folder / f"{name}.pt").write_bytes(b"")
    plan.main(["--params", str(write_params(tmp_path / "params.yaml", params)), "--checkpoints", str(folder)])
    notes = [line for line in capsys.readouterr().out.splitlines() if line.startswith("plan: note")]
    assert notes == [f"plan: note: {folder}/c4.pt is the checkpoint of chunk c4, which params.yaml no longer has;"
                     f" DVC keeps it and its dvc.lock entry: `rm {folder}/c4.pt` if you removed the chunk for good"]
