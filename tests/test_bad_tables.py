"""Each bad table is one line and nothing written: at generate (data.source) and at prediction (--input)."""

import copy
import os

import numpy as np
import pytest

import predict
from chunktrain.recipe.errors import PipelineError
from chunktrain.recipe.splits import read_dataset
from chunktrain.testing import TINY_PARAMS, new_project
from tables import classification_table, own_params, regression_table, write_table


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
        return frame
    return edit


BAD = [
    ("regression", None, {}, r"data.source: 'tables/t.csv' not found"),
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
    ("regression", _regression(lambda f: (f.__setitem__("rooms", 3), f.__setitem__("slope", 0.0))), {},
     r"2 columns are constant in the train split; .* leave them out with data.exclude: \[slope, rooms\]$"),
    ("regression", _regression(lambda f: f), {"target": "Price"},
     r"no target column 'Price' \(of 1 missing\), did you mean 'price'\?; it has"),
    ("regression", _regression(lambda f: f), {"features": None, "exclude": ["slop"]},
     r"no excluded column 'slop' \(of 1 missing\), did you mean 'slope'\?"),
    ("regression", lambda: regression_table(rows=4), {},
     r"has 4 rows, too few for the splits .*\{'train': 4, 'val': 0, 'test': 0\}"),
    ("classification", lambda: classification_table(rows=60).assign(species="cat"), {},
     r"target column 'species' has one class \('cat'\) in the train split; classification needs at least two"),
    ("classification", lambda: classification_table(rows=60).assign(species=np.linspace(0, 1, 60)), {},
     r"target column 'species' holds float64 values; a classification target must be class labels"),
    ("regression", lambda: classification_table(rows=60).rename(columns={"species": "price"}),
     {"features": ["width", "weight"]}, r"target column 'price' is not numeric .* model.task is regression"),
    ("regression", _regression(lambda f: f.__setitem__("prediction", f.pop("rooms"))), {"features": None},
     r"tables/t.csv: feature column 'prediction' has a name predict writes its output under \(prediction,"
     r" proba_<class>\); rename the column, or list it in data.exclude"),
    ("regression", _regression(lambda f: f.__setitem__("price", f["price"] * 1e200)), {},
     r"target column 'price' spreads too far to report an MSE in its units \(std 1.49e\+203, at most 1e\+100\);"
     r" divide it by a power of ten"),
]


@pytest.mark.parametrize("task, make, data, message", BAD)
def test_a_bad_table_is_one_line_and_no_split_is_written(tmp_path, params, task, make, data, message):
    if make:
        write_table(tmp_path / "tables/t.csv", task, make())
    params = own_params(params, task, "tables/t.csv")
    params["data"].update(data)
    stages = new_project(tmp_path, params, git=False)
    with pytest.raises(PipelineError, match=message) as raised:
        stages.generate()
    assert "\n" not in str(raised.value)
    assert not stages.dataset.exists()


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """The init checkpoint of a regressor on the prices table: what prediction needs."""
    root = tmp_path_factory.mktemp("bad_input")
    write_table(root / "t.csv", "regression", regression_table(rows=100))
    stages = new_project(root, own_params(copy.deepcopy(TINY_PARAMS), "regression", "t.csv"), git=False)
    stages.generate()
    stages.init()
    return stages.checkpoint("init")


@pytest.mark.parametrize("edit, message", [
    (lambda f: f.drop(columns="area"), r"new.csv: no feature column 'area'"),
    (_set("slope", 2, "x"), r"new.csv: column 'slope' is not numeric \(str, e.g. 'x'\)"),
    (_set("slope", 4, np.nan), r"new.csv: column 'slope' has 1 missing or infinite value\(s\)"),
])
def test_bad_prediction_input_is_one_line_and_writes_nothing(checkpoint, tmp_path, edit, message):
    write_table(tmp_path / "new.csv", "regression", edit(regression_table(rows=20)))
    with pytest.raises(PipelineError, match=message):
        predict.main(["--checkpoint", str(checkpoint), "--input", str(tmp_path / "new.csv"),
                      "--output", str(tmp_path / "out.csv")])
    assert not (tmp_path / "out.csv").exists()


def test_a_prediction_input_that_is_no_regular_file_is_named_so(checkpoint, tmp_path):
    """A FIFO would block the reader, a link to /dev/zero never end: neither is "not found"."""
    os.mkfifo(tmp_path / "new.csv")
    (tmp_path / "zero.csv").symlink_to("/dev/zero")
    for name in ("new.csv", "zero.csv"):
        with pytest.raises(PipelineError, match=rf"^--input {tmp_path / name} is not a regular file \(a folder, a"
                                                rf" FIFO, a device, ...\)$"):
            predict.main(["--checkpoint", str(checkpoint), "--input", str(tmp_path / name), "--output",
                          str(tmp_path / "out.csv")])


def test_data_exclude_leaves_columns_out_of_every_column_but_the_target(tmp_path, params):
    write_table(tmp_path / "tables/t.csv", "regression", regression_table(rows=100).assign(batch=1))
    params = own_params(params, "regression", "tables/t.csv")
    params["data"].update(features=None, exclude=["id", "batch"])
    stages = new_project(tmp_path, params, git=False)
    stages.generate()
    assert read_dataset(stages.dataset).transform["features"] == ["area", "slope", "rooms"]
