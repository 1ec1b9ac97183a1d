"""Each bad table is one line, exit 2, and nothing written: at generate (data.source) and at prediction (--input)."""

import subprocess
import sys

import numpy as np
import pytest

from chunktrain.errors import PipelineError
from chunktrain.testing import ROOT, Stages, project_env, write_params
from tables import classification_table, own_params, regression_table, write_table

import predict


def _regression(edit):
    def make():
        frame = regression_table(rows=100)
        edit(frame)
        return frame
    return make


def _set(column, row, value):
    def edit(frame):
        frame[column] = frame[column].astype(object) if isinstance(value, str) else frame[column]
        frame.loc[row, column] = value
    return edit


BAD = [
    ("regression", None, {}, r"data.source tables/t.csv not found"),
    ("regression", _regression(lambda f: f.pop("slope")), {},
     r"tables/t.csv: no feature column 'slope' \(of 1 missing\); it has \['id', 'area', 'rooms', 'price'\]"),
    ("regression", _regression(lambda f: f.pop("price")), {}, r"no target column 'price'"),
    ("regression", _regression(_set("area", 7, "ten")), {},
     r"column 'area' is not numeric \(str, e.g. 'ten'\); every feature must be a number"),
    ("regression", _regression(_set("rooms", 9, np.nan)), {},
     r"column 'rooms' has 1 missing or infinite value\(s\), the first in row 9; fill or drop them"),
    ("regression", _regression(_set("price", 3, np.nan)), {},
     r"target column 'price' has 1 missing value\(s\), the first in row 3"),
    ("regression", _regression(lambda f: f.__setitem__("rooms", 3)), {},
     r"column 'rooms' is constant in the train split \(every value 3\)"),
    ("regression", _regression(lambda f: f.__setitem__("price", 1.5)), {}, r"target column 'price' is constant"),
    ("regression", lambda: regression_table(rows=4), {},
     r"has 4 rows, too few for the splits .*\{'train': 4, 'val': 0, 'test': 0\}"),
    ("classification", lambda: classification_table(rows=60).assign(species="cat"), {},
     r"target column 'species' has one class \('cat'\) in the train split; classification needs at least two"),
    ("classification", lambda: classification_table(rows=60).assign(species=np.linspace(0, 1, 60)), {},
     r"target column 'species' holds float64 values; a classification target must be class labels"),
    ("regression", lambda: classification_table(rows=60).rename(columns={"species": "price"}),
     {"features": ["width", "weight"]}, r"target column 'price' is not numeric .* model.task is regression"),
]


@pytest.mark.parametrize("task, make, data, message", BAD)
def test_a_bad_table_is_one_line_and_nothing_is_written(tmp_path, monkeypatch, params, task, make, data, message):
    monkeypatch.chdir(tmp_path)
    if make:
        write_table(tmp_path / "tables/t.csv", task, make())
    params = own_params(params, task, "tables/t.csv")
    params["data"].update(data)
    stages = Stages(tmp_path, params)
    with pytest.raises(PipelineError, match=message) as raised:
        stages.generate()
    assert "\n" not in str(raised.value)
    assert not (tmp_path / "data").exists()


def test_the_generate_stage_exits_2_with_one_line(tmp_path, params):
    write_params(tmp_path / "params.yaml", own_params(params, "regression", "missing.parquet"))
    result = subprocess.run([sys.executable, str(ROOT / "src/generate.py"), "--train", "a", "--val", "b",
                             "--test", "c", "--transform", "d"], cwd=tmp_path, env=project_env(),
                            capture_output=True, text=True)
    assert (result.returncode, result.stderr) == (2, "error: data.source missing.parquet not found\n")


@pytest.fixture
def checkpoint(tmp_path, monkeypatch, params):
    monkeypatch.chdir(tmp_path)
    write_table(tmp_path / "t.csv", "regression", regression_table(rows=100))
    stages = Stages(tmp_path, own_params(params, "regression", "t.csv"))
    stages.generate()
    stages.init()
    return stages.checkpoint("init")


@pytest.mark.parametrize("edit, message", [
    (lambda f: f.drop(columns="area"), r"new.csv: no feature column 'area'"),
    (_regression(_set("slope", 2, "x")), r"new.csv: column 'slope' is not numeric \(str, e.g. 'x'\)"),
    (_regression(_set("slope", 4, np.nan)), r"new.csv: column 'slope' has 1 missing or infinite value\(s\)"),
])
def test_bad_prediction_input_is_one_line_and_writes_nothing(checkpoint, tmp_path, edit, message):
    frame = edit(regression_table(rows=20)) if edit.__name__ == "<lambda>" else edit()
    write_table(tmp_path / "new.csv", "regression", frame)
    with pytest.raises(PipelineError, match=message):
        predict.main(["--checkpoint", str(checkpoint), "--input", "new.csv", "--output", "out.csv"])
    assert not (tmp_path / "out.csv").exists()


def test_the_predict_script_exits_2_with_one_line(checkpoint, tmp_path):
    write_table(tmp_path / "new.csv", "regression", regression_table(rows=20).drop(columns="rooms"))
    result = subprocess.run([sys.executable, str(ROOT / "src/predict.py"), "--checkpoint", str(checkpoint),
                             "--input", "new.csv", "--output", "out.csv"], cwd=tmp_path, env=project_env(),
                            capture_output=True, text=True)
    assert result.returncode == 2 and result.stderr.count("\n") == 1
    assert result.stderr.startswith("error: new.csv: no feature column 'rooms'")
