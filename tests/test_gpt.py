"""The GPT builder, sample(), and src/sample.py on a checkpoint written here."""

import pytest
import torch

import sample as sample_script
from chunktrain.recipe.checkpoint import (FORMAT_VERSION, KEYS, LINEAGE, MODEL_CONFIG, MODEL_STATE, TRANSFORM, VERSION,
                                          save_checkpoint)
from chunktrain.recipe.errors import PipelineError
from chunktrain.recipe.gpt import gpt, sample

VOCAB = list("\nabcdefghij")
ARGS = {"n_layer": 2, "n_head": 2, "n_embd": 16, "block_size": 8}


def tiny(seed: int = 0, **args) -> torch.nn.Module:
    torch.manual_seed(seed)
    return gpt(len(VOCAB), len(VOCAB), **(ARGS | args)).eval()


def ids(T: int = 8, seed: int = 1) -> torch.Tensor:
    return torch.randint(len(VOCAB), (2, T), generator=torch.Generator().manual_seed(seed))


def test_logits_have_one_row_per_position_and_token():
    assert tiny()(ids()).shape == (2, 8, len(VOCAB))


@pytest.mark.parametrize("bias", [True, False])
def test_output_layer_is_the_token_embedding(bias):
    model = tiny(bias=bias)
    V, B, L, C = len(VOCAB), ARGS["block_size"], ARGS["n_layer"], ARGS["n_embd"]
    # nanoGPT's count with the tied embedding counted once: embeddings, blocks, final LayerNorm
    expected = V * C + B * C + L * (12 * C * C + 2 * C + bias * 11 * C) + C + bias * C
    assert sum(p.numel() for p in model.parameters()) == expected
    assert [name for name, p in model.named_parameters() if p.shape == (V, C)] == ["wte.weight"]


def test_a_position_sees_no_later_tokens():
    before = ids()
    after = before.clone()
    after[:, 4:] = (after[:, 4:] + 1) % len(VOCAB)
    model = tiny()
    torch.testing.assert_close(model(after)[:, :4], model(before)[:, :4])
    assert not torch.allclose(model(after)[:, 4:], model(before)[:, 4:])


def test_the_seed_decides_the_initial_weights():
    same, other = tiny(seed=3).state_dict(), tiny(seed=4).state_dict()
    for name, weight in tiny(seed=3).state_dict().items():
        assert torch.equal(weight, same[name])
    assert not torch.equal(same["h.0.attn.c_attn.weight"], other["h.0.attn.c_attn.weight"])


@pytest.mark.parametrize("name, std", [("wte.weight", 0.02), ("h.0.attn.c_attn.weight", 0.02),
                                       ("h.0.attn.c_proj.weight", 0.01), ("h.1.mlp.c_proj.weight", 0.01)])
def test_initial_weights_are_gpt2s(name, std):
    weights = tiny().state_dict()
    assert weights[name].std().item() == pytest.approx(std, rel=0.15)  # residual projections: 0.02 / sqrt(2 * n_layer)
    assert not any(weight.any() for key, weight in weights.items() if key.endswith("bias"))


def test_a_model_built_on_meta_loads_with_assign_and_stays_tied():
    model = tiny()
    with torch.device("meta"):
        loaded = gpt(len(VOCAB), len(VOCAB), **ARGS)
    loaded.load_state_dict(model.state_dict(), assign=True)
    torch.testing.assert_close(loaded.eval()(ids()), model(ids()))
    loaded.wte.weight.data.zero_()  # logits come through the embedding: all zero once it is
    assert not loaded(ids()).any()


def test_a_window_longer_than_block_size_is_refused():
    with pytest.raises(ValueError, match="9 tokens .* block_size 8"):
        tiny()(ids(T=9))


@pytest.mark.parametrize("outputs, args, match", [(5, {}, "inputs 11 and outputs 5"),
                                                  (11, {"n_head": 3}, "n_embd 16 .* n_head 3")])
def test_builder_refuses_what_cannot_be_built(outputs, args, match):
    with pytest.raises(ValueError, match=match):
        gpt(len(VOCAB), outputs, **(ARGS | args))


def test_sample_with_the_same_seed_gives_the_same_ids():
    prompt, model = torch.tensor([1, 2, 3]), tiny()

    def draw() -> torch.Tensor:
        return sample(model, prompt, 12, top_k=5, generator=torch.Generator().manual_seed(0), block_size=8)

    first = draw()
    assert first.shape == (15,) and torch.equal(first[:3], prompt)
    assert torch.equal(draw(), first)


def test_sample_with_top_k_1_is_greedy():
    model, greedy = tiny(), torch.tensor([1, 2, 3])
    for _ in range(10):
        greedy = torch.cat((greedy, model(greedy[-8:].view(1, -1))[0, -1].argmax().view(1)))
    drawn = sample(model, greedy[:3], 10, top_k=1, generator=torch.Generator().manual_seed(0), block_size=8)
    assert torch.equal(drawn, greedy)


def write_checkpoint(path, task: str = "language_model") -> str:
    """What sample.py reads, under the keys and format version load_checkpoint requires; the rest left empty."""
    config = {"arch": "gpt", "args": ARGS, "task": task, "inputs": len(VOCAB), "outputs": len(VOCAB)}
    save_checkpoint({key: None for key in KEYS} | {VERSION: FORMAT_VERSION, LINEAGE: {}, MODEL_CONFIG: config,
                                                   MODEL_STATE: tiny().state_dict(),
                                                   TRANSFORM: {"task": task, "vocab": VOCAB}}, path)
    return str(path)


def test_sample_script_prints_the_prompt_and_the_text(tmp_path, capsys):
    argv = ["--checkpoint", write_checkpoint(tmp_path / "c1.pt"), "--prompt", "abc", "--tokens", "20", "--seed", "7"]
    sample_script.main(argv)
    text = capsys.readouterr().out
    sample_script.main(argv)
    assert text.startswith("abc") and len(text) == 3 + 20 + 1  # one character per token, then print's newline
    assert set(text) <= set(VOCAB) and capsys.readouterr().out == text


@pytest.mark.parametrize("option, match", [(["--prompt", "aZbY"], r"'YZ' not in the model's vocabulary \(11 char"),
                                           (["--tokens", "0"], "--tokens 0"),
                                           (["--temperature", "0"], "--temperature 0"),
                                           (["--temperature", "1e-45"], r"--temperature 1e-45: must be from 0.001"),
                                           (["--seed", str(2**64)], r"--seed 18446744073709551616: must be from 0"),
                                           (["--seed", "-1"], r"--seed -1: must be from 0 to 2\*\*64 - 1"),
                                           (["--top_k", "0"], "--top_k 0")])
def test_sample_script_refuses_bad_options(tmp_path, option, match):
    with pytest.raises(PipelineError, match=match):
        sample_script.main(["--checkpoint", write_checkpoint(tmp_path / "c1.pt"), *option])


def test_sample_script_refuses_a_table_model(tmp_path):
    with pytest.raises(PipelineError, match="is a regression model; sample.py needs a language model"):
        sample_script.main(["--checkpoint", write_checkpoint(tmp_path / "c1.pt", task="regression")])
