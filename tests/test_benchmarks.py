"""The benchmarks are not run by the suite (they take minutes), but their params must stay valid."""

import json
import subprocess
import sys

import pytest

from chunktrain.params import Params
from chunktrain.testing import ROOT, TINY_PARAMS, project_env, ran

sys.path.insert(0, str(ROOT / "benchmarks"))
import bench  # noqa: E402


def test_the_benchmark_pipelines_have_valid_params():
    params = Params.model_validate(bench.pipeline_params(n_samples=30_000, chunks=5, epochs=2))
    assert list(params.train.chunks) == ["c1", "c2", "c3", "c4", "c5"]
    assert params.train.lineage("c5") == ["c1", "c2", "c3", "c4", "c5"]


def test_the_benchmark_pipelines_write_every_key_dvc_yaml_lists():
    """DVC reads params.yaml itself and fails on a key the file lacks, even where the schema has a default."""
    written = bench.pipeline_params(n_samples=30_000, chunks=5, epochs=2)
    for section in ("data", "model", "train"):
        assert written[section].keys() == TINY_PARAMS[section].keys(), section


def test_the_throughput_benchmark_runs_the_stage_loop(tmp_path):
    """A few seconds: keeps the benchmark in step with train_epochs' signature."""
    row = bench.throughput(tmp_path)
    assert row["figure"] == "training throughput"
    assert row["value"] > 0 and row["baseline"] > 0


def test_the_hand_off_benchmark_builds_its_model():
    """Its 100M-parameter model, on the meta device (no memory): keeps checkpoint_io.py in step with model.py."""
    import checkpoint_io
    import torch

    from chunktrain.model import build_model

    with torch.device("meta"):
        model = build_model(checkpoint_io.CONFIG)
    assert sum(p.numel() for p in model.parameters()) == (16 + 1) * 10_000 + (10_000 + 1) * 10_000 + (10_000 + 1)


@pytest.mark.slow
def test_the_growth_benchmark_builds_a_project_dvc_repro_finds_up_to_date(tmp_path):
    """fast_repro.py runs every stage of dvc.yaml in one process; a dvc repro after it must run nothing."""
    project = bench.growth_project(tmp_path / "growth", 3, ROOT, env={})
    assert sorted(path.name for path in (project.path / "data/checkpoints").glob("*.pt")) == [
        "c1.pt", "c2.pt", "c3.pt", "init.pt"]
    project.edit_params(lambda params: params["train"]["chunks"].update(c4={"from": "c3", "epochs": 1}))
    assert ran(project.dvc("repro")) == {"validate", "train@c4", "evaluate"}


def test_the_dvc_add_timer_finds_each_part_it_times(tmp_path):
    """dvc_add.py times DVC's own functions: a rename in DVC must fail here, not zero a figure of `make bench`."""
    env = project_env()
    for command in (["git", "init", "-q"], ["dvc", "init", "-q"], ["dvc", "config", "cache.type", "reflink,copy"]):
        subprocess.run(command, cwd=tmp_path, env=env, check=True)
    (tmp_path / "big.pt").write_bytes(b"checkpoint" * 100_000)
    result = subprocess.run([sys.executable, str(ROOT / "benchmarks/dvc_add.py"), "big.pt"], cwd=tmp_path, env=env,
                            check=True, capture_output=True, text=True)
    parts = json.loads(result.stdout.splitlines()[-1])
    assert parts.keys() == {"md5", "cache", "relink"} and all(seconds > 0 for seconds in parts.values()), parts
    assert (tmp_path / ".dvc/cache/files/md5").is_dir()
