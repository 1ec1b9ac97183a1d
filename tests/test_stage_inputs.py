"""data/params/<chunk>.yaml and data/code/train.sha256 change exactly when what they stand for does."""

import shutil

import pytest

import validate
from chunktrain.errors import PipelineError
from chunktrain.stage_inputs import check_chunk_inputs, code_digest
from chunktrain.testing import ROOT, write_params


def chunk_files(tmp_path, params: dict) -> dict[str, bytes]:
    """Run stage validate on params; the bytes of each data/params/<chunk>.yaml it writes."""
    tmp_path.mkdir(exist_ok=True)
    write_params(tmp_path / "params.yaml", params)
    folder = tmp_path / "data/params"
    validate.main(["--params", str(tmp_path / "params.yaml"), "--out", str(tmp_path / "ok"),
                   "--chunk-params", str(folder)])
    return {path.stem: path.read_bytes() for path in sorted(folder.iterdir())}


@pytest.mark.parametrize("edit, changed", [
    (lambda p: p["train"]["chunks"]["c2"].update(lr=0.003), {"c2"}),
    (lambda p: p["train"]["chunks"].update(c4={"from": "c3", "epochs": 1}), {"c4"}),  # appended: the others keep
    (lambda p: p["train"].update(lr=0.02), {"c1", "c2", "c3"}),
    (lambda p: p["train"]["schedule"].update(warmup_epochs=1.0), {"c1", "c2", "c3"}),
    (lambda p: p["model"].update(hidden=[8]), {"c1", "c2", "c3"}),
    (lambda p: p.update(seed=1), {"c1", "c2", "c3"}),
    (lambda p: p["train"].update(snapshot_every_steps=10), set()),  # no chunk reads it: nothing reruns
    (lambda p: p["data"].update(noise=0.2), set()),  # reaches the chunks through the dataset instead
    (lambda p: p["train"]["chunks"].update(c2={"epochs": 2, "from": "c1"}), set()),  # same values, other order
])
def test_a_chunk_params_file_changes_exactly_when_a_value_the_chunk_reads_does(tmp_path, params, edit, changed):
    before = chunk_files(tmp_path / "before", params)
    edit(params)
    after = chunk_files(tmp_path / "after", params)
    assert {name for name in after if before.get(name) != after[name]} == changed


def test_a_removed_chunk_leaves_no_params_file(tmp_path, params):
    chunk_files(tmp_path, params)
    del params["train"]["chunks"]["c3"]
    assert list(chunk_files(tmp_path, params)) == ["c1", "c2"]


@pytest.fixture
def checkout(tmp_path, params):
    """A copy of src/ with params.yaml and the two stage inputs as stages validate and train-code write them."""
    shutil.copytree(ROOT / "src", tmp_path / "src", ignore=shutil.ignore_patterns("__pycache__"))
    chunk_files(tmp_path, params)
    (tmp_path / "train.sha256").write_text(code_digest(tmp_path / "src/train.py"))
    return tmp_path


def check(checkout, raw: dict) -> None:
    script = checkout / "src/train.py"
    check_chunk_inputs(raw, "c2", checkout / "data/params/c2.yaml", checkout / "train.sha256", script=script,
                       code=code_digest(script))


def test_a_chunk_trains_when_its_inputs_describe_params_yaml_and_the_code(checkout, params):
    check(checkout, params)


def test_a_chunk_refuses_params_its_params_file_does_not_describe(checkout, params):
    """What `dvc repro -f -s train@c2` after an edit of params.yaml would otherwise train on."""
    params["train"]["chunks"]["c2"]["lr"] = 0.5
    with pytest.raises(PipelineError, match=r"data/params/c2.yaml does not match params.yaml; run `dvc repro"
                                            r" train@c2` \(without -s\), which reruns stages validate and train-code"):
        check(checkout, params)


def test_a_chunk_refuses_code_its_code_digest_does_not_describe(checkout, params):
    with open(checkout / "src/chunktrain/training.py", "a") as file:
        file.write("\n# an edit\n")
    with pytest.raises(PipelineError, match=r"train.sha256 does not match the code of .*src/train.py; run `dvc repro"):
        check(checkout, params)


def test_a_missing_input_is_one_error_naming_it(checkout, params):
    (checkout / "data/params/c2.yaml").unlink()
    with pytest.raises(PipelineError, match=r"cannot read .*data/params/c2.yaml: No such file or directory; run"):
        check(checkout, params)
