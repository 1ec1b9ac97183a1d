"""End to end: a hostile params.yaml stops `dvc repro` and `dvc exp run` in stage validate, before any harm."""

import hashlib

import pytest
import yaml

from chunktrain.errors import brief
from chunktrain.testing import ran, sha256, stop_queue

HOSTILE = [
    ("semicolon", "c9;touch {marker};#"),
    ("substitution", "$(touch {marker})"),
    ("backticks", "c9`touch {marker}`"),
    ("traversal", "../../victim"),  # data/checkpoints/../../victim.pt and metrics/train/../../victim.json
    ("tracked file", "../bench"),  # data/bench.pt and metrics/bench.json
    ("space", "c 2"),
]


def add_chunk(project, name: str) -> None:
    project.edit_params(lambda params: params["train"]["chunks"].update({name: {"from": "c1", "epochs": 1}}))


def plant_victims(project) -> dict:
    victims = {project.path / name: f"{name} must survive\n" for name in
               ("victim.pt", "victim.json", "data/bench.pt", "metrics/bench.json")}
    for path, text in victims.items():
        path.write_text(text)
    return victims


def assert_nothing_harmed(project, marker, victims: dict, checkpoints: dict) -> None:
    assert not marker.exists(), "a chunk name ran a shell command"
    for path, text in victims.items():
        assert path.read_text() == text
    assert {path: sha256(path) for path in checkpoints} == checkpoints  # DVC removed no output


@pytest.mark.slow
@pytest.mark.parametrize("name", [name for _, name in HOSTILE], ids=[kind for kind, _ in HOSTILE])
def test_a_hostile_chunk_name_stops_dvc_repro_before_any_command_or_deletion(project, tmp_path, name):
    marker = tmp_path / "marker"
    name = name.format(marker=marker)
    victims = plant_victims(project)
    checkpoints = {path: sha256(path) for path in (project.path / "data/checkpoints").glob("*.pt")}
    add_chunk(project, name)
    result = project.run("dvc", "repro", check=False)
    assert result.returncode != 0
    assert ran(result.stdout) == {"validate"}
    error_line = f"error: params.yaml: train.chunks: name {brief(name)} must match [A-Za-z][A-Za-z0-9_-]{{0,63}}"
    assert [line for line in result.stdout.splitlines() if line.startswith("error: ")] == [
        error_line + " and not be 'init'"]
    assert_nothing_harmed(project, marker, victims, checkpoints)


@pytest.mark.slow
def test_a_hostile_chunk_name_stops_dvc_exp_run(project, tmp_path):
    marker = tmp_path / "marker"
    victims = plant_victims(project)
    checkpoints = {path: sha256(path) for path in (project.path / "data/checkpoints").glob("*.pt")}
    add_chunk(project, f"c9;touch {marker};#")
    result = project.run("dvc", "exp", "run", check=False)
    assert result.returncode != 0
    assert "error: params.yaml: train.chunks: name 'c9;touch" in result.stdout
    assert_nothing_harmed(project, marker, victims, checkpoints)


@pytest.mark.slow
def test_a_hostile_chunk_name_stops_a_queued_experiment(project, tmp_path):
    marker = tmp_path / "marker"
    victims = plant_victims(project)
    add_chunk(project, f"$(touch {marker})")
    project.dvc("exp", "run", "--queue", "-n", "hostile")
    try:
        result = project.run("dvc", "exp", "run", "--run-all", check=False)
        logs = project.dvc("queue", "logs", "hostile", check=False)
    finally:
        stop_queue(project)
    assert "Failed" in project.dvc("queue", "status")
    assert f"error: params.yaml: train.chunks: name {brief(f'$(touch {marker})')}" in result.stdout + logs
    assert not marker.exists()
    for path, text in victims.items():
        assert path.read_text() == text


def cache_object(project, out: str):
    (stage,) = [s for s in yaml.safe_load((project.path / "dvc.lock").read_text())["stages"].values()
                if any(o["path"] == out for o in s.get("outs", []))]
    (md5,) = [o["md5"] for o in stage["outs"] if o["path"] == out]
    return md5, project.path / ".dvc/cache/files/md5" / md5[:2] / md5[2:]


@pytest.mark.slow
def test_writing_into_an_output_in_place_leaves_the_cache_intact(project):
    md5, cached = cache_object(project, "data/checkpoints/c1.pt")
    path = project.path / "data/checkpoints/c1.pt"
    assert not path.samefile(cached)
    with open(path, "r+b") as file:  # as the test's user, with no `dvc unprotect` first
        file.seek(200)
        file.write(b"hand edit")
    assert hashlib.md5(cached.read_bytes()).hexdigest() == md5
    assert "data/checkpoints/c1.pt" in project.dvc("status")  # DVC sees the edit as a change, not as the cache
    project.dvc("checkout", "--force", "data/checkpoints/c1.pt")  # and can restore the cached bytes
    assert hashlib.md5(path.read_bytes()).hexdigest() == md5
