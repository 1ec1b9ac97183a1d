"""Is a chunk exact on this machine? `make verify` trains it again three ways and compares; a snapshot from
another platform is not resumed from; an op with no deterministic version stops a chunk in one line."""

import contextlib
import copy
import re
import shutil
import sys
import types

import pytest
import torch

from chunktrain.recipe import checkpoint as ckpt
from chunktrain.recipe.chunk import CODE
from chunktrain.recipe.errors import PipelineError
from chunktrain.runner import trainer, verify
from chunktrain.testing import ROOT, TINY_TEXT_PARAMS, assert_same_state, new_project, tiny_text, write_params

from test_runtime import Crash, crash_at

GPU = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

# A user's model that adds noise from Python's global `random` in forward: no checkpoint carries that generator.
NOISY_MODEL = """import random

from torch import nn


class Noisy(nn.Linear):
    def forward(self, x):
        return super().forward(x) + (random.random() * 1e-3 if self.training else 0.0)


def build(inputs, outputs):
    return Noisy(inputs, outputs)
"""
# put_ has no deterministic implementation, on the CPU too; only in training (init tries a model in eval mode).
NONDETERMINISTIC_MODEL = """from torch import nn


class Scattered(nn.Linear):
    def forward(self, x):
        y = super().forward(x)
        if not self.training:
            return y
        return y + y.new_zeros(y.shape).put_(x.new_zeros(2, dtype=int), y.detach().flatten()[:2])


def build(inputs, outputs):
    return Scattered(inputs, outputs)
"""


def trained(tmp_path, params: dict, monkeypatch, model: str | None = None):
    """The project with c1 and c2 trained, here; a model of the user's own (`model`, the code of
    src/models/own.py) is importable here as models.own too."""
    if model:
        params["model"] = {"task": "regression", "arch": "models.own:build", "args": {}}
    project = new_project(tmp_path, params, git=False)
    # The chunks train in this process: their code id must be the project's, src/models/own.py included.
    monkeypatch.setattr(trainer, "recipe_id", lambda: ckpt.code_id(project.path / "src", *CODE))
    if model:
        (project.path / "src/models/own.py").write_text(model)
        own = types.ModuleType("models.own")
        exec(compile(model, "own.py", "exec"), own.__dict__)
        monkeypatch.setitem(sys.modules, "models.own", own)
    if params["data"]["source"].endswith(".txt"):
        text = project.path / params["data"]["source"]
        text.parent.mkdir(exist_ok=True)
        text.write_text(tiny_text(5000))
    project.generate()
    project.init()
    project.train("c1")
    project.train("c2")
    return project


def verify_exit(project, capsys, *args: str) -> tuple[int | str, str]:
    capsys.readouterr()
    code = 0
    with contextlib.chdir(project.path):
        try:
            verify.main(["c2", *args])
        except SystemExit as exit:
            code = exit.code
    return code, capsys.readouterr().out


def assert_identical_three_ways(out: str, last: str) -> None:
    lines = out.splitlines()
    assert re.fullmatch(r"platform: torch \S+, cpu \(\w+\), 1 thread per process, deterministic algorithms on;"
                        " the checkpoint's own", lines[1]), out
    assert [line.split(":")[0] for line in lines[2:5]] == ["whole", "halves", "killed"], out
    assert all(re.search(r" identical to (c2.pt|the whole way)", line) for line in lines[2:5]), out
    assert "stopped by SIGINT after step" in lines[3] and re.search(r"SIGKILL at step \d+, (resumed|no snapshot)",
                                                                   lines[4]), out
    assert lines[-1] == last, out


def test_make_verify_finds_a_chunk_identical_three_ways(tmp_path, params, monkeypatch):
    project = trained(tmp_path, params, monkeypatch)
    shutil.copy(ROOT / "Makefile", project.path)
    verified = project.run("make", "--no-print-directory", "-o", ".venv/.installed", "verify", "CHUNK=c2")
    out = verified.stdout.split("\n", 2)[2]  # after make's echo of its command
    assert out.startswith("verify c2: training it again from data/checkpoints/c1.pt three ways (steps 1..50, all"), out
    assert_identical_three_ways(out, "c2 is exact here: all three ways gave the bits of data/checkpoints/c2.pt")


@pytest.mark.slow
def test_verify_finds_a_tiny_gpts_first_steps_identical_three_ways(tmp_path, monkeypatch, capsys):
    project = trained(tmp_path, copy.deepcopy(TINY_TEXT_PARAMS), monkeypatch)
    code, out = verify_exit(project, capsys, "--steps", "12")
    assert code == 0, out
    assert "whole:   identical to c2.pt's first 3 rounds of history" in out  # c1's two, c2's first
    assert_identical_three_ways(out, "c2's first 12 steps are exact here: the three ways agree bit for bit")


@pytest.mark.slow
def test_verify_names_a_draw_from_pythons_global_random_in_the_users_model(tmp_path, params, monkeypatch, capsys):
    project = trained(tmp_path, params, monkeypatch, model=NOISY_MODEL)
    code, out = verify_exit(project, capsys, "--steps", "6")
    assert code == 1, out
    assert "three ways (steps 1..6 of its 50)" in out.splitlines()[0]
    assert re.search(r"^whole: +no round of c2.pt's history ends within these steps", out, re.MULTILINE), out
    assert re.search(r"^halves: +DIFFERS from the whole way at model_state_dict\.weight \(largest difference",
                     out, re.MULTILINE), out
    assert out.splitlines()[-1].startswith("likely cause: the model (models.own:build) draws from Python's global"
                                           " `random` in forward, which no checkpoint carries"), out


def test_a_difference_names_the_first_tensor_and_its_largest_difference():
    reference = {ckpt.MODEL_STATE: {"a": torch.zeros(3), "b": torch.ones(2)}, ckpt.OPTIMIZER_STATE: {},
                 ckpt.RNG_STATE: {"torch": torch.zeros(4, dtype=torch.uint8)}, ckpt.HISTORY: [{"val_loss": 0.5}],
                 ckpt.LINEAGE: {"id": "a"}}
    same = copy.deepcopy(reference)
    same[ckpt.LINEAGE] = {"id": "b"}  # the platform is reported apart
    assert verify.first_difference(reference, same) is None
    changed = copy.deepcopy(reference)
    changed[ckpt.MODEL_STATE]["b"][1] += 0.5
    changed[ckpt.HISTORY][0]["val_loss"] = 0.25
    assert verify.first_difference(reference, changed) == ("model_state_dict.b", "largest difference 0.5")
    changed = copy.deepcopy(reference)
    changed[ckpt.RNG_STATE]["torch"][0] = 1
    assert verify.first_difference(reference, changed) == ("rng_state.torch", "1 of 4 values differ")
    changed[ckpt.RNG_STATE] = reference[ckpt.RNG_STATE]
    changed[ckpt.HISTORY][0]["val_loss"] = 0.25
    assert verify.first_difference(reference, changed) == ("history.0.val_loss", "largest difference 0.25")
    negative_zero = copy.deepcopy(reference)
    negative_zero[ckpt.MODEL_STATE]["a"][0] = -0.0  # equal as numbers, not as bits
    assert verify.first_difference(reference, negative_zero) == ("model_state_dict.a", "largest difference 0")


@pytest.mark.parametrize("part, value, cause", [
    ("torch", "2.0.0", "data/checkpoints/c1.pt was trained on another platform: another torch ('2.0.0' there, '{}'"
                       " here); only a run on its own platform gives its bits"),
    ("code", "f" * 64, "data/checkpoints/c1.pt was made by another code than the project holds now; run `dvc repro`"),
])
def test_verify_names_a_checkpoint_from_another_platform_or_code_as_the_cause(stages, part, value, cause):
    here = ckpt.load_checkpoint(stages.train("c1"))
    recorded = {**here, ckpt.LINEAGE: {**here[ckpt.LINEAGE], part: value}}
    recorded[ckpt.LINEAGE]["id"] = ckpt.lineage_id(recorded[ckpt.LINEAGE])
    files = trainer.ChunkFiles.of("c1")
    found = verify.cause({"whole": verify.Result(here, "")}, recorded, None, files, None)
    assert found.startswith(cause.format(here[ckpt.LINEAGE]["torch"])), found


def test_the_platform_is_in_the_lineage_and_its_id(stages):
    record = ckpt.load_checkpoint(stages.train("c1"))[ckpt.LINEAGE]
    assert record["torch"] == str(torch.__version__) and record["deterministic"] is True
    assert record["device"] == f"cpu ({torch.backends.cpu.get_cpu_capability()})" and record["threads"] == 1
    assert ckpt.lineage_id(record) == record["id"]
    assert ckpt.lineage_id({**record, "torch": "2.0.0"}) != record["id"]


def test_a_snapshot_from_another_torch_version_is_skipped_in_one_line_and_the_chunk_starts_from_its_parent(
        stages, params, monkeypatch, capsys):
    params["train"].update(threads=1, snapshot_every_steps=10, snapshot_every_seconds=None)
    write_params(stages.params_path, params)
    uninterrupted = ckpt.load_checkpoint(stages.train("c1"))
    stages.checkpoint("c1").unlink()
    with monkeypatch.context() as patch:
        patch.setattr(trainer, "crash_point", crash_at(35))
        with pytest.raises(Crash):
            stages.train("c1")
    monkeypatch.setattr(torch, "__version__", "2.99.0")  # as after an upgrade
    capsys.readouterr()
    upgraded = ckpt.load_checkpoint(stages.train("c1"))
    out = capsys.readouterr().out
    before = uninterrupted[ckpt.LINEAGE]
    assert (f"skipping snapshot .resume/c1/snapshot.pt: it was taken with another torch ('{before['torch']}' there,"
            " '2.99.0' here)") in out
    assert "resuming" not in out
    assert_same_state(uninterrupted, upgraded)  # trained from the parent (torch's kernels did not change here)
    assert upgraded[ckpt.LINEAGE]["torch"] == "2.99.0" and upgraded[ckpt.LINEAGE]["id"] != before["id"]


def test_an_op_with_no_deterministic_implementation_stops_the_chunk_in_one_line_naming_it(tmp_path, params,
                                                                                          monkeypatch):
    with pytest.raises(PipelineError, match=r"^train@c1: put_ has no deterministic implementation on cpu, so the"
                                            r" chunk would not give the same bytes twice; use another op"):
        trained(tmp_path, params, monkeypatch, model=NONDETERMINISTIC_MODEL)


@GPU
def test_on_a_gpu_chunks_are_deterministic_and_the_lineage_names_the_card(tmp_path, monkeypatch):
    params = copy.deepcopy(TINY_TEXT_PARAMS)
    params["train"]["device"] = "cuda"
    project = trained(tmp_path, params, monkeypatch)
    record = ckpt.load_checkpoint(project.checkpoint("c2"))[ckpt.LINEAGE]
    assert record["device"].startswith(f"cuda {torch.cuda.get_device_name()} (sm_") and record["deterministic"]


@GPU
@pytest.mark.slow
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_verify_finds_a_tiny_gpt_on_a_gpu_identical_three_ways(tmp_path, monkeypatch, capsys, dtype):
    params = copy.deepcopy(TINY_TEXT_PARAMS)
    params["train"].update(device="cuda", dtype=dtype)
    project = trained(tmp_path, params, monkeypatch)
    code, out = verify_exit(project, capsys)
    assert code == 0 and "c2 is exact here" in out, out
