"""model.pretrained: a Hugging Face GPT-2 folder's weights and tokenizer as init's model, without the network."""

import copy
import json
import subprocess
import sys

import pytest
import torch

from chunktrain.data.text import learn_bpe
from chunktrain.params import load_params
from chunktrain.recipe.checkpoint import LINEAGE, MODEL_CONFIG, TRANSFORM, load_checkpoint
from chunktrain.recipe.errors import PipelineError
from chunktrain.recipe.model import load_trained
from chunktrain.recipe.splits import read_tokenizer
import export as export_script
from chunktrain.testing import TINY_TEXT_PARAMS, assert_same_state, new_project, sha256, tiny_text, write_params

FOLDER = "pretrained/tiny-gpt2"


def save_tiny_gpt2(folder, vocab_size: int | None = None, **config):
    """A GPT-2 of random weights, as `save_pretrained` writes it, with a BPE tokenizer learnt from a small text."""
    from transformers import GPT2Config, GPT2LMHeadModel

    tokenizer = learn_bpe(tiny_text(3_000, seed=1), 300)
    folder.mkdir(parents=True)
    tokenizer.save(str(folder / "tokenizer.json"))
    torch.manual_seed(1)
    model = GPT2LMHeadModel(GPT2Config(vocab_size=vocab_size or tokenizer.get_vocab_size(), n_positions=64,
                                       n_embd=16, n_layer=2, n_head=2, **config))
    model.save_pretrained(folder)
    return model.eval()


@pytest.fixture
def pretrained_params() -> dict:
    params = copy.deepcopy(TINY_TEXT_PARAMS)
    params["model"] = {"arch": "gpt", "pretrained": FOLDER, "args": {"block_size": 32, "dropout": 0.0}}
    return params


@pytest.fixture
def text_project(tmp_path, pretrained_params):
    project = new_project(tmp_path, pretrained_params, git=False)
    (tmp_path / "data").mkdir()
    (tmp_path / "data/text.txt").write_text(tiny_text())
    return project


def test_init_starts_from_the_pretrained_weights_and_tokenizer(text_project):
    hf_model = save_tiny_gpt2(text_project.path / FOLDER)
    text_project.generate()
    text_project.init()
    init = load_checkpoint(text_project.checkpoint("init"))
    assert init[MODEL_CONFIG]["args"] == {"n_layer": 2, "n_head": 2, "n_embd": 16, "block_size": 32, "dropout": 0.0,
                                          "bias": True, "gelu": "tanh"}
    tokenizer = read_tokenizer((text_project.path / FOLDER / "tokenizer.json").read_text())
    assert read_tokenizer(init[TRANSFORM]["tokenizer"]).to_str() == tokenizer.to_str()
    assert init[LINEAGE]["parent"].startswith("gpt2:")  # the weights' digest: other weights, another init
    ids = torch.tensor([tokenizer.encode("To be or not to be that is the question.").ids])
    with torch.no_grad():
        ours, theirs = load_trained(init, "init.pt")(ids), hf_model(ids).logits
    assert torch.allclose(ours, theirs, atol=1e-5, rtol=0)
    assert load_checkpoint(text_project.train("c1"))["history"][-1]["step"] == 20  # and it trains on


@pytest.mark.slow
def test_a_pretrained_gpt2_fine_tunes_in_chunks_bit_for_bit_and_resumes_a_kill_9_to_the_same_bytes(tmp_path,
                                                                                                    pretrained_params):
    """Under dvc repro: {c1: 20 steps, c2: 20 steps} from the pretrained init equals {whole: 40 steps}, and c2
    killed mid-way resumes from its snapshot to the same bytes."""
    pretrained_params["train"].update(snapshot_every_steps=10,
                                      chunks={"c1": {"from": "init", "steps": 20}, "c2": {"from": "c1", "steps": 20},
                                              "whole": {"from": "init", "steps": 40}})
    project = new_project(tmp_path / "repo", pretrained_params)
    (project.path / "data").mkdir(exist_ok=True)
    (project.path / "data/text.txt").write_text(tiny_text())
    save_tiny_gpt2(project.path / FOLDER)
    project.commit("a text and a pretrained GPT-2")
    project.dvc("repro")
    c2 = project.path / "data/checkpoints/c2.pt"
    assert_same_state(load_checkpoint(c2), load_checkpoint(project.path / "data/checkpoints/whole.pt"))
    uninterrupted = sha256(c2)
    killed = project.run("dvc", "repro", "-f", "-s", "train@c2", check=False, env={"CHUNKTRAIN_KILL_AT": "step:15"})
    assert killed.returncode != 0 and not c2.exists()
    assert "resuming c2 from step 10 of the chunk" in project.dvc("repro", "-f", "-s", "train@c2")
    assert sha256(c2) == uninterrupted


def test_a_pretrained_gpt2_exports_back_with_its_activation(text_project, tmp_path):
    from transformers import AutoModelForCausalLM

    hf_model = save_tiny_gpt2(text_project.path / FOLDER)
    text_project.generate()
    text_project.init()
    export_script.main(["--checkpoint", str(text_project.checkpoint("init")), "--huggingface", str(tmp_path / "hf")])
    exported = AutoModelForCausalLM.from_pretrained(tmp_path / "hf").eval()
    assert exported.config.activation_function == "gelu_pytorch_tanh" and exported.config.n_positions == 32
    ids = torch.arange(30).view(1, 30)
    with torch.no_grad():
        assert torch.allclose(exported(ids).logits, hf_model(ids).logits, atol=1e-5, rtol=0)


@pytest.mark.parametrize("edit, message", [
    (lambda folder: _edit_config(folder, model_type="llama"),
     f"model.pretrained: '{FOLDER}' is a 'llama' model; init loads the gpt2 family alone"),
    (lambda folder: _edit_config(folder, activation_function="relu"),
     f"model.pretrained: '{FOLDER}': activation_function 'relu' is not GPT-2's"),
    (lambda folder: (folder / "model.safetensors").write_bytes(b"not weights"),
     f"model.pretrained: '{FOLDER}': cannot read its model.safetensors"),
    (lambda folder: _edit_config(folder, n_embd=32),
     f"model.pretrained: '{FOLDER}': its weights do not fit the gpt its config.json describes"),
], ids=["another family", "another activation", "not safetensors", "weights of another size"])
def test_init_refuses_what_is_not_a_gpt2_that_fits_in_one_line(text_project, edit, message):
    save_tiny_gpt2(text_project.path / FOLDER)
    text_project.generate()
    edit(text_project.path / FOLDER)
    with pytest.raises(PipelineError) as raised:
        text_project.init()
    assert str(raised.value).startswith(message) and "\n" not in str(raised.value)


def test_an_embedding_the_tokenizer_does_not_fill_stops_init_with_exit_2(text_project):
    save_tiny_gpt2(text_project.path / FOLDER, vocab_size=320)
    text_project.generate()
    text_project.plan()
    done = subprocess.run([sys.executable, "src/init.py", "--spec", "data/plan/init.json", "--dataset", "data/dataset",
                           "--out", "data/checkpoints/init.pt"], cwd=text_project.path, capture_output=True, text=True)
    assert done.returncode == 2 and not text_project.checkpoint("init").exists()
    assert done.stderr == (f"error: model.pretrained: '{FOLDER}' has 320 token embeddings, its tokenizer 300"
                           " tokens; the weights do not fit\n")


@pytest.mark.parametrize("edit, message", [
    ({"model": {"arch": "mlp", "pretrained": FOLDER, "args": {"block_size": 32}}},
     "model.arch: 'mlp'; model.pretrained loads into the built-in gpt alone"),
    ({"model": {"arch": "gpt", "pretrained": FOLDER, "args": {"block_size": 32, "n_layer": 2}}},
     "model.args: n_layer come from model.pretrained's config.json; give block_size and dropout alone"),
    ({"model": {"arch": "gpt", "pretrained": "data/gpt2", "args": {"block_size": 32}}},
     "model.pretrained: 'data/gpt2' must be the path of a folder under pretrained/"),
    ({"data": {**TINY_TEXT_PARAMS["data"], "tokenizer": "bpe", "vocab_size": 300}},
     "data.tokenizer: model.pretrained brings its own tokenizer.json; remove it"),
])
def test_bad_pretrained_params_name_the_key(tmp_path, pretrained_params, edit, message):
    with pytest.raises(PipelineError, match=message):
        load_params(write_params(tmp_path / "params.yaml", {**pretrained_params, **edit}))


def test_a_missing_pretrained_file_stops_plan(text_project):
    (text_project.path / FOLDER).mkdir(parents=True)
    with pytest.raises(PipelineError, match=f"model.pretrained: '{FOLDER}/config.json' not found"):
        text_project.plan()


def _edit_config(folder, **changes) -> None:
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, **changes}))
