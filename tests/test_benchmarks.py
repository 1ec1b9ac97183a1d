"""The benchmarks are not run by the suite (they take minutes); these hold what their figures rest on."""

import json
import subprocess
import sys

import pytest

from chunktrain.core.config import Params
from chunktrain.testing import ROOT, project_env, ran

sys.path.insert(0, str(ROOT / "benchmarks"))
import bench  # noqa: E402


def test_the_benchmark_pipelines_have_valid_params():
    params = Params.model_validate(bench.pipeline_params(n_samples=30_000, chunks=5, epochs=2))
    assert list(params.train.chunks) == ["c1", "c2", "c3", "c4", "c5"]
    assert params.train.lineage("c5") == ["c1", "c2", "c3", "c4", "c5"]


@pytest.mark.slow
@pytest.mark.parametrize("layout", [bench.SPEC_FILES, bench.PER_KEY_PARAMS], ids=lambda layout: layout.name)
def test_the_growth_benchmark_builds_a_project_dvc_repro_finds_up_to_date(tmp_path, layout):
    """fast_repro.py runs every stage in one process; a dvc repro after it must run nothing, and an appended chunk
    only plan, itself and evaluate, in the chosen layout and in the rejected one (per-key params)."""
    project = bench.growth_project(tmp_path / "growth", 3, layout)  # asserts that dvc repro then runs nothing
    assert sorted(path.name for path in (project.path / "data/checkpoints").glob("*.pt")) == [
        "c1.pt", "c2.pt", "c3.pt", "init.pt"]
    new = bench.append_chunk(project)
    assert ran(project.dvc("repro")) == {"plan", f"train@{new}", "evaluate"}


@pytest.mark.slow
def test_the_per_key_layout_reruns_a_chunk_on_its_own_key(tmp_path):
    """The rejected layout is DVC's convention: a chunk's params.yaml key reruns that chunk and what follows it."""
    project = bench.growth_project(tmp_path / "growth", 3, bench.PER_KEY_PARAMS)
    project.edit_params(lambda params: params["train"]["chunks"]["c2"].update(lr=0.002))
    assert "train.chunks.c2" in project.dvc("status", "train@c2")
    assert ran(project.dvc("repro")) == {"plan", "train@c2", "train@c3", "evaluate"}


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


def test_import_times_name_who_imports_each_heavy_package():
    """The imports figures' notes say which of our modules pulls in a package; parsed from -X importtime."""
    stderr = "\n".join([
        "import time: self [us] | cumulative | imported package",
        "import time:       100 |     900000 |     torch",
        "import time:        50 |     950000 |   chunktrain.core.splits",
        "import time:        10 |     960000 | chunktrain.data.dataset",
        "import time:     80000 |      80000 | pandas",
    ])
    total, heavy = bench.import_times(stderr)
    assert total == pytest.approx(1.04)
    assert heavy == {"torch": (0.9, "chunktrain.core.splits"), "pandas": (0.08, "top level")}
