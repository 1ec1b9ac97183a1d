"""Stages synthesize and generate: deterministic splits and dataset id; splits read back checked, a problem in one
line."""

import json
import shutil
import sys

import pyarrow as pa
import pyarrow.parquet
import pytest

from chunktrain.recipe.errors import PipelineError
from chunktrain.recipe.splits import INFO, count_rows, read_dataset, read_split
from chunktrain.testing import ROOT, TINY_PARAMS, Project, new_project, project_env, run, sha256


@pytest.fixture(scope="module")
def generated(tmp_path_factory) -> Project:
    """The tiny synthetic dataset, generated once: tests only read it, or copy a split to damage."""
    stages = new_project(tmp_path_factory.mktemp("generated"), TINY_PARAMS, git=False)
    stages.generate()
    return stages


SPLITS = ("train", "val", "test")


def dataset_files(stages: Project) -> dict[str, str]:
    paths = {**{name: stages.dataset / f"{name}.parquet" for name in SPLITS}, "dataset": stages.dataset / INFO,
             "synthetic": stages.root / "data/raw/synthetic.parquet"}
    return {name: sha256(path) for name, path in paths.items()}


def test_the_same_params_give_byte_identical_files_and_another_seed_others(generated, tmp_path, params):
    again = new_project(tmp_path / "again", params, git=False)
    again.generate()
    assert dataset_files(again) == dataset_files(generated)
    params["seed"] = 1
    other = new_project(tmp_path / "other", params, git=False)
    other.generate()
    assert all(a != b for a, b in zip(dataset_files(other).values(), dataset_files(generated).values()))
    assert read_dataset(other.dataset).id != read_dataset(generated.dataset).id


def test_the_dataset_id_is_the_hash_generate_computed_of_what_it_wrote(generated, tmp_path, params):
    params["data"]["val_fraction"] = 0.2  # the same rows, split otherwise
    other = new_project(tmp_path, params, git=False)
    other.generate()
    assert sha256(other.root / "data/raw/synthetic.parquet") == sha256(generated.root / "data/raw/synthetic.parquet")
    ids = {read_dataset(stages.dataset).id for stages in (generated, other)}
    assert len(ids) == 2 and all(len(i) == 64 for i in ids)


def test_splits_have_the_named_columns_sizes_and_the_train_splits_statistics(generated):
    assert sorted(path.name for path in generated.dataset.iterdir()) == [INFO, "test.parquet", "train.parquet",
                                                                         "val.parquet"]
    sizes = {name: count_rows(generated.dataset / f"{name}.parquet") for name in SPLITS}
    assert sizes == {"train": 1600, "val": 200, "test": 200}
    assert {name: read_dataset(generated.dataset).rows(name) for name in SPLITS} == sizes
    train = read_split(generated.dataset / "train.parquet")
    assert train.x.shape == (1600, 4) and train.y.shape == (1600, 1)
    assert train.x.mean(dim=0).abs().max() < 1e-5 and (train.x.std(dim=0, correction=0) - 1).abs().max() < 1e-4
    transform = json.loads((generated.dataset / INFO).read_text())["transform"]
    assert transform["features"] == ["x0", "x1", "x2", "x3"] and transform["task"] == "regression"


@pytest.mark.parametrize("content, message", [
    (None, r"cannot read .*dataset.json \(.*No such file or directory.*\); run `dvc repro generate`"),
    ("not json", r"cannot read .*dataset.json \(.*\); run `dvc repro generate`"),
    ('{"transform": {}}', r"cannot read .*dataset.json \('id'\); run `dvc repro generate`"),
])
def test_a_missing_or_malformed_dataset_json_is_one_line(tmp_path, content, message):
    if content is not None:
        (tmp_path / "dataset.json").write_text(content)
    with pytest.raises(PipelineError, match=message):
        read_dataset(tmp_path)


def test_an_unreadable_split_names_the_file(tmp_path):
    (tmp_path / "train.parquet").write_bytes(b"nope")
    with pytest.raises(PipelineError, match=r"cannot read dataset file .*train.parquet .*dvc repro generate"):
        read_split(tmp_path / "train.parquet")


def rewrite_column(path, name: str, values) -> None:
    table = pa.parquet.read_table(path)
    table = table.set_column(table.column_names.index(name), name, pa.array(values))
    pa.parquet.write_table(table, path)


@pytest.mark.parametrize("column, value, message", [
    ("x1", float("nan"), "column x1 has 1 NaN or infinite value(s), the first in row 7"),
    ("y", float("inf"), "column y has 1 NaN or infinite value(s), the first in row 7"),
    ("x0", None, "column x0 has 1 null(s); expected floats only"),
    ("x2", "oops", "column x2 has type string; expected floats only"),
])
def test_bad_values_in_a_split_are_one_line_naming_file_and_column(generated, tmp_path, column, value, message):
    path = shutil.copy(generated.dataset / "test.parquet", tmp_path / "test.parquet")
    values = [0.5] * 200
    values[7] = value
    rewrite_column(path, column, [str(v) for v in values] if value == "oops" else values)
    with pytest.raises(PipelineError) as raised:
        read_split(path)
    assert str(raised.value) == f"{path}: {message}; run `dvc repro generate`"


@pytest.mark.slow
def test_the_training_stage_reads_its_data_without_importing_pandas(generated):
    """pandas costs every training stage about half a second of start-up (see benchmarks/)."""
    code = (f"import sys; import train; from chunktrain.recipe.splits import read_dataset;"
            f" read_dataset({str(generated.dataset)!r}).split('train');"
            " assert 'pandas' not in sys.modules, 'pandas was imported'")
    run([sys.executable, "-c", code], cwd=ROOT / "src")


@pytest.mark.slow
def test_the_generate_stage_does_not_import_torch(generated, tmp_path):
    """torch costs a process about 1.7 s to import, and generating the data needs none of it."""
    code = ("import sys, generate; generate.main(sys.argv[1:]);"
            " assert 'torch' not in sys.modules, 'torch was imported'")
    args = ["--spec", str(generated.spec("data.json")), "--out", str(tmp_path / "dataset")]
    run([sys.executable, "-c", code, *args], cwd=generated.root,
        env={**project_env(), "PYTHONPATH": str(ROOT / "src")})
    assert {path.name: sha256(path) for path in (tmp_path / "dataset").iterdir()} == {
        path.name: sha256(path) for path in generated.dataset.iterdir()}
