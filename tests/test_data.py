import hashlib
import subprocess
import sys

import pytest

from chunktrain.data import count_features, read_split
from chunktrain.errors import PipelineError
from chunktrain.testing import ROOT, Stages


def digests(stages: Stages) -> dict:
    return {name: hashlib.sha256(path.read_bytes()).hexdigest() for name, path in stages.split.items()}


def test_same_params_give_byte_identical_files(tmp_path, params):
    first = Stages(tmp_path / "a", params)
    first.generate()
    second = Stages(tmp_path / "b", params)
    second.generate()
    assert digests(first) == digests(second)
    params["seed"] = 1
    third = Stages(tmp_path / "c", params)
    third.generate()
    assert digests(third)["train"] != digests(first)["train"]


def test_splits_have_the_named_columns_and_sizes(tmp_path, params):
    stages = Stages(tmp_path, params)
    stages.generate()
    sizes = {name: len(read_split(path).y) for name, path in stages.split.items()}
    assert sizes == {"train": 1600, "val": 200, "test": 200}
    train = read_split(stages.split["train"])
    assert train.x.shape == (1600, 4) and train.y.shape == (1600, 1)
    assert count_features(stages.split["train"]) == 4


def test_an_unreadable_split_names_the_file(tmp_path):
    (tmp_path / "train.parquet").write_bytes(b"nope")
    with pytest.raises(PipelineError, match=r"cannot read dataset file .*train.parquet .*dvc repro generate"):
        read_split(tmp_path / "train.parquet")


def test_the_training_stage_reads_its_data_without_importing_pandas(tmp_path, params):
    """pandas costs every training stage about half a second of start-up (see benchmarks/)."""
    stages = Stages(tmp_path, params)
    stages.generate()
    code = (f"import sys; import train; from chunktrain.data import read_split; read_split({str(stages.split['train'])!r});"
            " assert 'pandas' not in sys.modules, 'pandas was imported'")
    subprocess.run([sys.executable, "-c", code], cwd=ROOT / "src", check=True)


def test_the_generate_stage_does_not_import_torch(tmp_path, params):
    """torch costs a process about 1.7 s to import, and generating the data needs none of it."""
    stages = Stages(tmp_path, params)
    code = ("import sys, generate; generate.main(sys.argv[1:]);"
            " assert 'torch' not in sys.modules, 'torch was imported'")
    args = ["--params", str(stages.params_path), *stages.split_args("train", "val", "test"),
            "--transform", str(stages.transform)]
    subprocess.run([sys.executable, "-c", code, *args], cwd=ROOT / "src", check=True)
    assert stages.split["test"].is_file()


def rewrite_column(path, name: str, values) -> None:
    import pyarrow as pa

    table = pa.parquet.read_table(path)
    table = table.set_column(table.column_names.index(name), name, pa.array(values))
    pa.parquet.write_table(table, path)


@pytest.mark.parametrize("column, value, message", [
    ("x1", float("nan"), "column x1 has 1 NaN or infinite value(s), the first in row 7"),
    ("y", float("inf"), "column y has 1 NaN or infinite value(s), the first in row 7"),
    ("x0", None, "column x0 has 1 null(s); expected floats only"),
    ("x2", "oops", "column x2 has type string; expected floats only"),
])
def test_bad_values_in_a_split_are_one_line_naming_file_and_column(tmp_path, params, column, value, message):
    stages = Stages(tmp_path, params)
    stages.generate()
    path = stages.split["test"]
    values = read_split(path).y[:, 0].tolist() if column == "y" else [0.5] * 200
    values[7] = value
    if value == "oops":
        values = [str(v) for v in values]
    rewrite_column(path, column, values)
    with pytest.raises(PipelineError) as raised:
        read_split(path)
    assert str(raised.value) == f"{path}: {message}; run `dvc repro generate`"


def test_the_evaluate_stage_reports_a_nan_in_the_test_split_with_exit_2(stages):
    stages.train("c1", "init")
    rewrite_column(stages.split["test"], "x0", [float("nan")] * 200)
    result = subprocess.run([sys.executable, str(ROOT / "src/evaluate.py"), "--checkpoints", "checkpoints",
                             "--test", "data/test.parquet", "--chunks", "metrics/chunks.json",
                             "--best", "metrics/best.json", "--curves", "metrics/curves.csv"],
                            cwd=stages.root, capture_output=True, text=True)
    assert result.returncode == 2
    assert result.stderr == ("error: data/test.parquet: column x0 has 200 NaN or infinite value(s), the first in row 0;"
                             " run `dvc repro generate`\n")
    assert not (stages.root / "metrics/chunks.json").exists() and not (stages.root / "metrics/best.json").exists()
