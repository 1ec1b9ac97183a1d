"""End to end: stage plan refuses a hostile chunk name before any other stage command runs or any output is deleted.

The other names the schema refuses are a table in tests/test_config.py; this proves plan runs first, for real.
"""

import pytest

from chunktrain.recipe.errors import brief
from chunktrain.testing import ran, sha256

# A path out of data/checkpoints and metrics/train to the repo root, and a shell command in dvc.yaml's cmd.
NAME = "../../victim;touch marker;#"
VICTIMS = ["victim;touch marker;#.pt", "victim;touch marker;#.json"]  # where train@<NAME>'s outputs would be


@pytest.mark.slow
@pytest.mark.parametrize("command", [["repro"], ["exp", "run"]], ids=["dvc repro", "dvc exp run"])
def test_a_hostile_chunk_name_stops_in_plan_before_any_command_or_deletion(project, command):
    for victim in VICTIMS:
        (project.path / victim).write_text("must survive\n")
    outputs = {path: sha256(path) for folder in ("data/dataset", "data/checkpoints", "metrics")
               for path in (project.path / folder).rglob("*") if path.is_file()}
    project.edit_params(lambda params: params["train"]["chunks"].update({NAME: {"from": "c1", "epochs": 1}}))

    result = project.run("dvc", *command, check=False)

    assert result.returncode != 0
    assert ran(result.stdout) == {"plan"}
    assert [line for line in result.stdout.splitlines() if line.startswith("error: ")] == [
        f"error: params.yaml: train.chunks: name {brief(NAME)} must match [A-Za-z][A-Za-z0-9_-]{{0,63}}"
        " and not be 'init'"]
    assert not (project.path / "marker").exists(), "a chunk name ran a shell command"
    assert {path: sha256(path) for path in outputs} == outputs  # DVC deleted no stage's output
    survived = [(project.path / victim).is_file() for victim in VICTIMS]
    if command == ["exp", "run"] and not any(survived):
        # DVC 3.67 BaseExecutor.reproduce (experiments/executor/base.py) calls dvc.repo.checkout(force=True,
        # allow_missing=True) over every stage's outs before dvc.reproduce, so before stage plan: an out with no
        # dvc.lock entry diffs to a deletion, and force skips the "unsaved files" check. No command of ours runs
        # before it, and `persist` does not exempt an out from checkout.
        pytest.xfail("dvc exp run deletes the files at the hostile chunk's output paths before stage plan runs")
    assert all((project.path / victim).read_text() == "must survive\n" for victim in VICTIMS)
