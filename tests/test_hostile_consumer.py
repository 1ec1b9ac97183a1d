"""Hostile input on the consumer side (issue 21): numbers at the edge, ambiguous tables, a model too large to build,
predict's outputs, and forged checkpoints. Each goes through the script a user runs; each bad input is one line
on stderr, exit 2, and nothing written or overwritten."""

import copy
import json
import math
import re
import shutil

import numpy as np
import pandas as pd
import pytest
import torch

import predict
import sample as sample_script
from chunktrain.recipe import checkpoint as ckpt
from chunktrain.recipe.errors import run_stage
from chunktrain.recipe.model import build_model
from chunktrain.recipe.splits import read_dataset
from chunktrain.data.transform import MAX_STANDARDIZED
from chunktrain.testing import (ROOT, TINY_PARAMS, TINY_TEXT_PARAMS, Project, new_project, project_env, run,
                                sha256, tiny_text, write_params)
from tables import classification_table, own_params, regression_table, write_table


def refused(capsys, main, message: str) -> str:
    """Run a script's main as its __main__ does; assert exit 2 and one stderr line matching `message`."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as exited:
        run_stage(main)
    err = capsys.readouterr().err
    assert exited.value.code == 2, err
    assert err.count("\n") == 1 and err.startswith("error: "), err
    assert re.search(message, err), err
    return err


def own_params_for(root, task: str, frame: pd.DataFrame, **data) -> dict:
    write_table(root / "t.csv", task, frame)
    params = own_params(copy.deepcopy(TINY_PARAMS), task, "t.csv")
    params["data"].update(data)
    return params


def own_stages(root, task: str, frame: pd.DataFrame, **data) -> Project:
    return new_project(root, own_params_for(root, task, frame, **data), git=False)


# Numbers at the edge

def test_a_feature_of_huge_finite_values_is_standardized_like_any_other(tmp_path):
    plain = own_stages(tmp_path / "plain", "regression", regression_table(rows=100))
    frame = regression_table(rows=100)
    frame["area"] *= 1e300  # its squares overflow float64: a plain std is inf, and the column became all -0.0
    huge = own_stages(tmp_path / "huge", "regression", frame)
    plain.generate()
    huge.generate()
    text = (huge.dataset / "dataset.json").read_text()
    assert "Infinity" not in text and "NaN" not in text
    assert read_dataset(huge.dataset).transform["feature_std"][0] == pytest.approx(
        read_dataset(plain.dataset).transform["feature_std"][0] * 1e300, rel=1e-12)
    pd.testing.assert_frame_equal(pd.read_parquet(huge.dataset / "train.parquet"),
                                  pd.read_parquet(plain.dataset / "train.parquet"), rtol=1e-6)


VAL_ROW, TRAIN_ROW = 60, 5  # in the val and the train split of 100 rows under seed 0


@pytest.mark.parametrize("column", ["area", "price"])
def test_a_value_millions_of_stds_out_is_refused_at_generate_naming_column_and_row(tmp_path, capsys, column):
    frame = regression_table(rows=100)
    frame.loc[VAL_ROW, column] = -3e38  # trained, it printed a val loss of 75 digits and the best chunk was chosen on it
    stages = own_stages(tmp_path, "regression", frame)
    refused(capsys, stages.generate, rf"t.csv \(val split\): column '{column}' row {VAL_ROW} is .* standard deviations"
                                     rf" from the train split's mean, over {re.escape(f'{MAX_STANDARDIZED:g}')}")
    assert not stages.dataset.exists()


@pytest.mark.parametrize("column", ["area", "price"])
def test_a_train_value_that_flattens_its_column_is_refused_at_generate(tmp_path, capsys, column):
    frame = regression_table(rows=100)
    frame.loc[TRAIN_ROW, column] = -3e38  # the column's std, so every other value standardizes to one float32
    stages = own_stages(tmp_path, "regression", frame)
    refused(capsys, stages.generate, rf"t.csv: column '{column}' row {TRAIN_ROW} is so far from the others that every"
                                     " other value of the train split standardizes to the same float32 number")
    assert not stages.dataset.exists()


def test_a_damaged_transform_in_dataset_json_is_one_line_at_init(tmp_path, capsys):
    stages = own_stages(tmp_path, "regression", regression_table(rows=100))
    stages.generate()
    info = json.loads((stages.dataset / "dataset.json").read_text())
    info["transform"]["feature_std"][1] = 0.0  # every prediction of the model init would make is NaN
    (stages.dataset / "dataset.json").write_text(json.dumps(info))
    refused(capsys, stages.init, r"cannot read .*dataset.json \(transform: feature_std.1: Input should be greater than"
                                 r" 0, got 0.0\); run `dvc repro generate`")
    assert not stages.checkpoint("init").exists()


# Tables

def init_checkpoint(folder, task: str, table):
    stages = own_stages(folder, task, table)
    stages.generate()
    stages.init()
    return stages.checkpoint("init")


@pytest.fixture(scope="module")
def regressor(tmp_path_factory):
    """The init checkpoint of a regressor on the prices table: a valid model to predict with and to forge."""
    return init_checkpoint(tmp_path_factory.mktemp("regressor"), "regression", regression_table(rows=100))


@pytest.fixture(scope="module")
def classifier(tmp_path_factory):
    return init_checkpoint(tmp_path_factory.mktemp("classifier"), "classification", classification_table(rows=120))


def predict_main(checkpoint, *args):
    return lambda: predict.main(["--checkpoint", str(checkpoint), *map(str, args)])


def test_a_repeated_column_name_is_refused_at_generate(tmp_path, capsys):
    stages = own_stages(tmp_path, "regression", regression_table(rows=100).rename(columns={"rooms": "area"}),
                        features=None)
    refused(capsys, stages.generate, r"data.source t.csv: column name 'area' appears more than once")
    assert not stages.dataset.exists()


@pytest.mark.parametrize("header, rows, message", [
    ("area,slope,rooms,area", True, r"--input .*new.csv: column name 'area' appears more than once"),
    ("area,slope,rooms", False, r"--input .*new.csv has no rows, only the header \['area', 'slope', 'rooms'\]"),
])
def test_an_ambiguous_or_empty_input_table_is_refused(regressor, tmp_path, capsys, header, rows, message):
    (tmp_path / "new.csv").write_text(header + "\n" + ("1,2,3,4\n" if rows else ""))
    refused(capsys, predict_main(regressor, "--input", tmp_path / "new.csv", "--output", tmp_path / "out.csv"),
            message)
    assert not (tmp_path / "out.csv").exists()


# A model too large to build

def test_a_model_larger_than_memory_is_refused_at_init_before_allocating(tmp_path, capsys):
    params = own_params_for(tmp_path, "regression", regression_table(rows=100))
    stages = new_project(tmp_path, params, git=False)
    stages.generate()
    params["model"]["args"]["hidden"] = [1_000_000, 1_000_000]
    write_params(stages.params_path, params)
    refused(capsys, stages.init, r"model.args \(hidden=\[1000000, 1000000\]\) make a model of 3,72\d.\d GiB, more"
                                 r" than the .* GiB of memory free here")
    assert not stages.checkpoint("init").exists()


# predict's outputs

@pytest.mark.parametrize("column", ["prediction", "proba_cat"])
def test_prediction_columns_never_overwrite_input_columns(classifier, tmp_path, capsys, column):
    classification_table(rows=5).assign(**{column: "mine"}).to_csv(tmp_path / "new.csv", index=False)
    refused(capsys, predict_main(classifier, "--input", tmp_path / "new.csv", "--output", tmp_path / "out.csv"),
            rf"new.csv: has a column '{column}', which the predictions would overwrite; rename it")
    assert not (tmp_path / "out.csv").exists()


@pytest.mark.parametrize("output", ["new.csv", "./sub/../new.csv", "link.csv", "hard.csv"])
def test_output_that_is_the_input_is_refused_and_the_input_survives(regressor, tmp_path, capsys, monkeypatch,
                                                                    output):
    monkeypatch.chdir(tmp_path)
    regression_table(rows=5).to_csv("new.csv", index=False)
    (tmp_path / "sub").mkdir()
    (tmp_path / "link.csv").symlink_to("new.csv")
    (tmp_path / "hard.csv").hardlink_to("new.csv")
    before = sha256(tmp_path / "new.csv")
    refused(capsys, predict_main(regressor, "--input", "new.csv", "--output", output), r"is the --input file")
    assert sha256(tmp_path / "new.csv") == before


@pytest.mark.parametrize("flag, name", [("--output", "out.csv"), ("--export", "model.pt2")])
def test_output_or_export_that_is_a_folder_is_one_line(regressor, tmp_path, capsys, flag, name):
    regression_table(rows=5).to_csv(tmp_path / "new.csv", index=False)
    (tmp_path / name).mkdir()
    args = ["--input", tmp_path / "new.csv", "--output", tmp_path / name] if flag == "--output" else [flag,
                                                                                                     tmp_path / name]
    refused(capsys, predict_main(regressor, *args), rf"{flag} .*{name} is a folder; give a file name")
    assert not any((tmp_path / name).iterdir())


def forge(source, target, edit) -> None:
    """A copy of checkpoint `source` at `target`, edited by edit(checkpoint) and saved whole."""
    checkpoint = copy.deepcopy(dict(torch.load(source, weights_only=True)))
    edit(checkpoint)
    ckpt.save_checkpoint(checkpoint, target)


def many_classes(n: int):
    def edit(checkpoint):
        config, transform = checkpoint[ckpt.MODEL_CONFIG], checkpoint[ckpt.TRANSFORM]
        transform["labels"] = [f"k{i:04d}" for i in range(n)]
        config["outputs"] = n
        checkpoint[ckpt.MODEL_STATE] = build_model(config).state_dict()
    return edit


@pytest.mark.filterwarnings("error::pandas.errors.PerformanceWarning")  # a column at a time warned ~5,000 times
def test_a_model_of_thousands_of_classes_predicts_without_warnings(classifier, tmp_path):
    forge(classifier, tmp_path / "wide.pt", many_classes(5000))
    classification_table(rows=5).to_csv(tmp_path / "new.csv", index=False)
    predict.main(["--checkpoint", str(tmp_path / "wide.pt"), "--input", str(tmp_path / "new.csv"),
                  "--output", str(tmp_path / "out.csv")])
    out = pd.read_csv(tmp_path / "out.csv")
    assert out.shape == (5, 5 + 1 + 5000)
    np.testing.assert_allclose(out.filter(like="proba_").sum(axis=1), 1.0, rtol=1e-6)


# Forged checkpoints

def _set(key, **values):
    def edit(checkpoint):
        checkpoint[key].update(values)
    return edit


def _drop(key, name):
    def edit(checkpoint):
        del checkpoint[key][name]
    return edit


def _state(checkpoint):
    checkpoint[ckpt.MODEL_STATE] = {}


def _two_features(checkpoint):
    transform = checkpoint[ckpt.TRANSFORM]
    for name in ("features", "feature_mean", "feature_std"):
        transform[name] = transform[name][:2]


FORGED = [
    (_set(ckpt.MODEL_CONFIG, arch="evil"), r"model.arch: 'evil' is neither a built-in architecture"),
    (_set(ckpt.MODEL_CONFIG, args={"hidden": [10**7, 10**7]}), r"make a model of .* GiB, more than the"),
    (_set(ckpt.MODEL_CONFIG, args={"hidden": [1e7, 1e7]}), r"hidden: \[10000000.0, 10000000.0\] must be a list"),
    (_state, r"Missing key\(s\) in state_dict"),
    (_set(ckpt.TRANSFORM, feature_mean=["a", "b", "c"]), r"transform: feature_mean.0: Input should be a valid number"),
    (_two_features, r"model_config.inputs is 3, but the transform's is 2"),
    (_drop(ckpt.MODEL_CONFIG, "args"), r"model_config: args: missing key"),
    (_set(ckpt.MODEL_CONFIG, args={}), r"model_config.args: \{\} do not fit mlp: missing a required argument"),
    (_drop(ckpt.TRANSFORM, "feature_std"), r"transform: feature_std: missing key"),
    (_set(ckpt.TRANSFORM, feature_std=[0.0, 1.0, 1.0]), r"feature_std.0: Input should be greater than 0"),
    (_set(ckpt.TRANSFORM, feature_std=[math.inf, 1.0, 1.0]), r"feature_std.0: Input should be a finite number"),
    (_set(ckpt.TRANSFORM, task="classification"), r"task is classification, which needs labels"),
    (lambda c: c.update({ckpt.MODEL_CONFIG: [1, 2]}), r"model_config: .*valid dictionary"),
]


@pytest.mark.parametrize("edit, message", FORGED)
def test_a_forged_checkpoint_is_one_line_at_predict_and_writes_nothing(regressor, tmp_path, capsys, edit, message):
    forge(regressor, tmp_path / "forged.pt", edit)
    regression_table(rows=5).to_csv(tmp_path / "new.csv", index=False)
    refused(capsys, predict_main(tmp_path / "forged.pt", "--input", tmp_path / "new.csv", "--output",
                                 tmp_path / "out.csv"), rf"forged.pt holds no usable model \(.*{message}")
    assert not (tmp_path / "out.csv").exists()


def test_a_checkpoint_whose_weights_are_not_finite_predicts_nothing(regressor, tmp_path, capsys):
    forge(regressor, tmp_path / "nan.pt", lambda c: c[ckpt.MODEL_STATE].update(
        {key: torch.full_like(value, math.nan) for key, value in c[ckpt.MODEL_STATE].items()}))
    regression_table(rows=5).to_csv(tmp_path / "new.csv", index=False)
    refused(capsys, predict_main(tmp_path / "nan.pt", "--input", tmp_path / "new.csv", "--output",
                                 tmp_path / "out.csv"), r"row 0 gets a non-finite prediction")
    assert not (tmp_path / "out.csv").exists()


def test_a_forged_language_model_is_one_line_at_sample(tmp_path, capsys):
    stages = new_project(tmp_path, copy.deepcopy(TINY_TEXT_PARAMS), git=False)
    (tmp_path / "data").mkdir()
    (tmp_path / "data/text.txt").write_text(tiny_text(2000))
    stages.generate()
    stages.init()
    forge(stages.checkpoint("init"), tmp_path / "forged.pt", _set(ckpt.MODEL_CONFIG, args={"n_layer": 1}))
    refused(capsys, lambda: sample_script.main(["--checkpoint", str(tmp_path / "forged.pt"), "--tokens", "5"]),
            r"forged.pt holds no usable model \(model_config.args: .* do not fit gpt: missing a required argument")

    def repeat_a_character(checkpoint):  # two ids of one character: the text would decode wrong
        vocab = checkpoint[ckpt.TRANSFORM]["vocab"]
        vocab[1] = vocab[0]

    forge(stages.checkpoint("init"), tmp_path / "repeated.pt", repeat_a_character)
    refused(capsys, lambda: sample_script.main(["--checkpoint", str(tmp_path / "repeated.pt"), "--tokens", "5"]),
            r"repeated.pt holds no usable model \(transform: character '.+' appears more than once\)")


@pytest.mark.slow  # make starts a fresh python, which takes seconds to import torch
def test_make_predict_takes_paths_as_typed_with_spaces_dollars_and_quotes(regressor, tmp_path):
    shutil.copy(ROOT / "Makefile", tmp_path)
    shutil.copytree(ROOT / "src", tmp_path / "src", ignore=shutil.ignore_patterns("__pycache__"))
    (tmp_path / "my $HOME").mkdir()
    shutil.copy(regressor, tmp_path / "my $HOME/init 1.pt")
    regression_table(rows=5).to_csv(tmp_path / 'price$2023 "a".csv', index=False)
    run(["make", "-o", ".venv/.installed", "predict", 'INPUT=price$2023 "a".csv', "OUTPUT=out put`id`.csv",
         "CHECKPOINT=my $HOME/init 1.pt"], cwd=tmp_path, env=project_env())
    assert len(pd.read_csv(tmp_path / "out put`id`.csv")) == 5
