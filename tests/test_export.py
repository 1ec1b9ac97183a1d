"""src/export.py: a text pipeline's checkpoint as a Hugging Face GPT-2 folder that transformers loads as it is."""

import copy
import shutil
import subprocess
import sys

import pytest
import torch

import export as export_script
from chunktrain.recipe.checkpoint import load_checkpoint
from chunktrain.recipe.errors import PipelineError
from chunktrain.recipe.model import load_trained
from chunktrain.testing import ROOT, TINY_TEXT_PARAMS, Project, new_project, tiny_text

CHAR, BPE = {}, {"tokenizer": "bpe", "vocab_size": 300}


def text_project(path, tokenizer: dict, bias: bool = True) -> Project:
    """A tiny text pipeline with data.tokenizer `tokenizer`, ready to run its stages."""
    params = copy.deepcopy(TINY_TEXT_PARAMS)
    params["data"].update(tokenizer)
    params["model"]["args"].update(bias=bias, block_size=48)
    stages = new_project(path, params, git=False)
    (path / "data").mkdir(exist_ok=True)
    (path / "data/text.txt").write_text(tiny_text())
    return stages


def trained_text_model(path, tokenizer: dict, bias: bool = True):
    """The checkpoint of chunk c1 of a tiny text pipeline with data.tokenizer `tokenizer`."""
    stages = text_project(path, tokenizer, bias)
    stages.generate()
    stages.init()
    return stages.train("c1")


@pytest.mark.parametrize("tokenizer, bias", [(CHAR, True), (BPE, True), (BPE, False)],
                         ids=["char", "bpe", "bpe-no-bias"])
def test_transformers_loads_the_export_and_its_logits_are_the_checkpoints(tmp_path, tokenizer, bias):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    checkpoint = trained_text_model(tmp_path / "repo", tokenizer, bias)
    export_script.main(["--checkpoint", str(checkpoint), "--huggingface", str(tmp_path / "hf")])
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= {p.name for p in (tmp_path / "hf").iterdir()}
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "hf").eval()
    hf_tokenizer = AutoTokenizer.from_pretrained(tmp_path / "hf")
    text = "To be or not to be. That is the question.\n"
    ids = hf_tokenizer(text, return_tensors="pt")["input_ids"]
    assert hf_tokenizer.decode(ids[0]) == text and 1 < ids.shape[1] <= 48  # within block_size
    ours = load_trained(load_checkpoint(checkpoint), checkpoint)
    with torch.no_grad():
        expected, got = ours(ids), model(ids).logits
    assert got.shape == expected.shape and torch.allclose(got, expected, atol=1e-5, rtol=0)


def test_export_refuses_a_table_model_in_one_line(stages, tmp_path):
    stages.init()
    with pytest.raises(PipelineError, match="is a regression model; export writes the built-in gpt alone"):
        export_script.main(["--checkpoint", str(stages.train("c1")), "--huggingface", str(tmp_path / "hf")])


def test_export_without_transformers_says_how_to_install_it(stages, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "transformers", None)  # not installed, as after `make run` alone
    with pytest.raises(PipelineError, match=r"export needs transformers.*`make huggingface` installs it"):
        export_script.main(["--checkpoint", str(stages.init()), "--huggingface", str(tmp_path / "hf")])


def test_no_stage_imports_transformers(tmp_path):
    """A text's stages, BPE included, run in a fresh process without transformers (seconds to import)."""
    text_project(tmp_path, BPE)
    run = ("import sys; from pathlib import Path; from chunktrain.testing import Project;"
           f" project = Project(Path({str(tmp_path)!r})); project.generate(); project.init();"
           " project.train('c1'); project.train('c2'); project.evaluate(); assert 'tokenizers' in sys.modules;"
           " print(sorted(m for m in sys.modules if m.startswith('transformers')))")
    done = subprocess.run([sys.executable, "-c", run], capture_output=True, text=True,
                          env={"PYTHONPATH": str(ROOT / "src"), "PATH": ""})
    assert done.returncode == 0 and done.stdout.endswith("\n[]\n"), done.stderr[-2000:]


def test_make_huggingface_exports_the_checkpoint_given(tmp_path):
    from transformers import AutoModelForCausalLM

    checkpoint = trained_text_model(tmp_path, BPE)
    shutil.copy(ROOT / "Makefile", tmp_path / "Makefile")
    made = subprocess.run(["make", "--no-print-directory", "-o", ".venv/.installed-export", "huggingface", "OUT=out/my gpt",
                           f"CHECKPOINT={checkpoint.relative_to(tmp_path)}"], cwd=tmp_path, capture_output=True,
                          text=True)
    assert made.returncode == 0, made.stderr
    assert made.stdout == "export: data/checkpoints/c1.pt -> out/my gpt (transformers' GPT-2)\n"
    assert AutoModelForCausalLM.from_pretrained(tmp_path / "out/my gpt").config.vocab_size == 300
