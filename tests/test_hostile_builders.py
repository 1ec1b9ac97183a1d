"""Hostile input, round three: the user's own builder, the GPT's arguments and knobs at extreme values. Each is one
line naming what is wrong, before anything trains (../shared/reviews/hostile-probes-2.md, cases 5 to 22)."""

import importlib
import re
import sys

import pytest
import torch

import models
from chunktrain.params import load_params
from chunktrain.recipe.errors import PipelineError
from chunktrain.recipe.model import build_model, check_built
from chunktrain.runner import processes
from chunktrain.testing import TINY_PARAMS, TINY_TEXT_PARAMS, write_params

TABLE = {"arch": None, "args": {}, "task": "regression", "inputs": 4, "outputs": 1}

BUILDERS = [  # the module's source, what init says
    ("def build(inputs, outputs):\n    raise RuntimeError('no GPU here')\n",
     r"model.args: models.{module}:build cannot build from \{{\}}: RuntimeError: no GPU here"),
    ("def build(inputs, outputs):\n    return {{}}['width']\n",
     r"model.args: models.{module}:build cannot build from \{{\}}: KeyError: 'width'"),
    ("def build(inputs, outputs):\n    return None\n",
     r"model.arch: models.{module}:build returned NoneType, not an nn.Module"),
    ("import torch\ndef build(inputs, outputs):\n    return torch.zeros(inputs)\n",
     r"model.arch: models.{module}:build returned Tensor, not an nn.Module"),
    ("def build(inputs, outputs)\n    pass\n",
     r"model.arch: cannot import models.{module} \(src/models/{module}.py\): SyntaxError: expected ':'"),
    ("raise ValueError('set MODEL_HOME')\n",
     r"model.arch: cannot import models.{module} \(src/models/{module}.py\): ValueError: set MODEL_HOME"),
    ("import sys\nsys.exit(0)\n",
     r"model.arch: cannot import models.{module} \(src/models/{module}.py\): SystemExit: 0"),
    ("from torch import nn\ndef build(inputs, outputs):\n    return nn.Identity()\n",
     r"model.arch: models.{module}:build built a model with no trainable parameters"),
    ("from torch import nn\ndef build(inputs, outputs):\n    return nn.Linear(inputs, outputs + 2)\n",
     r"model.arch: models.{module}:build maps a batch of shape \(2, 4\) to shape \(2, 3\); the task regression"
     r" needs \(2, 1\)"),
    ("from torch import nn\ndef build(inputs, outputs):\n    return nn.Linear(inputs, outputs).double()\n",
     r"model.arch: models.{module}:build built a model with float64 parameters; the data and the loop are float32"),
    ("from torch import nn\ndef build(inputs, outputs):\n    return nn.Linear(inputs + 1, outputs)\n",
     r"model.arch: models.{module}:build fails on a batch of shape \(2, 4\): RuntimeError: mat1 and mat2 shapes"),
]


@pytest.mark.parametrize("source, message", BUILDERS, ids=[
    "raises", "key-error", "returns-none", "returns-a-tensor", "syntax-error", "raises-at-import", "exits-at-import",
    "no-parameters", "too-many-outputs", "float64", "wrong-inputs"])
def test_a_builder_that_fails_or_builds_the_wrong_model_is_one_line_at_init(tmp_path, monkeypatch, request,
                                                                               source, message):
    module = f"probe_{request.node.callspec.id.replace('-', '_')}"
    (tmp_path / f"{module}.py").write_text(source.format())
    monkeypatch.setattr(models, "__path__", [str(tmp_path), *models.__path__])  # as if under src/models/
    monkeypatch.delitem(sys.modules, f"models.{module}", raising=False)
    importlib.invalidate_caches()
    config = {**TABLE, "arch": f"models.{module}:build"}
    with pytest.raises(PipelineError, match="^" + message.format(module=module)) as raised:
        check_built(build_model(config), config)  # what stage init does before it writes a checkpoint
    assert "\n" not in str(raised.value)


@pytest.mark.parametrize("args, message", [
    ({"n_layer": -1}, r"gpt: n_layer -1 must be a positive integer"),
    ({"n_head": 0}, r"gpt: n_head 0 must be a positive integer"),
    ({"n_head": -2, "n_embd": 16}, r"gpt: n_head -2 must be a positive integer"),
    ({"dropout": 1.0}, r"gpt: dropout 1.0 must be at least 0 and below 1"),
])
def test_gpt_arguments_that_can_only_be_mistakes_are_one_line(args, message):
    config = {"arch": "gpt", "task": "language_model", "inputs": 10, "outputs": 10,
              "args": {**TINY_TEXT_PARAMS["model"]["args"], **args}}
    with pytest.raises(PipelineError, match=rf"^model.args: gpt cannot build from .*: ValueError: {message}$"):
        build_model(config)


def test_a_good_builder_passes_the_check_and_leaves_the_seeds_draws_alone():
    torch.manual_seed(0)
    config = {**TABLE, "arch": "mlp", "args": {"hidden": [8]}}
    model = build_model(config)
    state = torch.random.get_rng_state()
    check_built(model, config)
    assert torch.equal(torch.random.get_rng_state(), state) and model.training


@pytest.mark.parametrize("key, value, message", [
    ("lr", 1e308, r"train.lr: Input should be less than or equal to 1000"),
    ("weight_decay", 1e300, r"train.weight_decay: Input should be less than or equal to 1000"),
])
def test_an_lr_or_weight_decay_beyond_reason_is_refused_at_plan(tmp_path, key, value, message):
    params = {**TINY_PARAMS, "train": {**TINY_PARAMS["train"], key: value}}
    with pytest.raises(PipelineError, match=message):
        load_params(write_params(tmp_path / "params.yaml", params))


def test_a_thread_count_far_beyond_the_cores_is_one_line(monkeypatch):
    monkeypatch.setattr("os.cpu_count", lambda: 2)
    with pytest.raises(PipelineError, match=r"^train.threads: 1000000 threads per process on a machine of 2 cores;"
                                            r" at most 8 a core$"):
        processes.set_threads(1_000_000)
    monkeypatch.setenv("OMP_NUM_THREADS", "17")
    with pytest.raises(PipelineError, match=re.escape("OMP_NUM_THREADS: 17 threads per process")):
        processes.set_threads(None)


def test_a_texts_batch_larger_than_memory_is_one_line_before_anything_is_drawn():
    """batch_size 1e9 (probe 18): the OS would kill the trainer once it touched the windows."""
    import train

    with pytest.raises(PipelineError, match=r"^train@c1: train.batch_size x grad_accum is 1,000,000,000 windows of 17"
                                            r" tokens, 380.0 GiB a step, more than the [\d.,]+ GiB of memory free"
                                            r" here; use a smaller batch_size$"):
        train.check_windows_fit(10**9, 16, "train@c1")
    train.check_windows_fit(64, 16, "train@c1")  # a real batch passes
