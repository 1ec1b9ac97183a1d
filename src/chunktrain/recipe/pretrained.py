"""A Hugging Face GPT-2 folder (config.json and model.safetensors) as the built-in gpt: its arguments and weights.

GPT-2 is our GPT's layout under other names: `transformer.` before each, Conv1D layers that hold their weights as
(in, out) where our Linear layers hold (out, in), and GELU's tanh approximation. src/export.py maps the other way
with the same names.
"""

import hashlib
import json
from pathlib import Path

import torch

from chunktrain.recipe.errors import PipelineError, brief
from chunktrain.recipe.specs import CONFIG, WEIGHTS

FAMILY = "gpt2"  # config.json's model_type: GPT-2 and the models trained as it (distilgpt2, tiny test models)
PREFIX = "transformer."
TRANSPOSED = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")
GELU = {"gelu_new": "tanh", "gelu_pytorch_tanh": "tanh", "gelu": "none"}  # activation_function -> gpt's gelu
BUFFERS = (".attn.bias", ".attn.masked_bias")  # older GPT-2 files keep the causal mask among the weights


def pretrained_args(folder: str, args: dict) -> tuple[dict, int]:
    """The gpt's arguments from the folder's config.json, with model.args' block_size (at most its n_positions) and
    dropout; and its vocabulary size. Another family or a config that is not GPT-2's is one line."""
    where = f"model.pretrained: {brief(folder)}"
    try:
        config = json.loads((Path(folder) / CONFIG).read_text())
    except (OSError, ValueError) as error:
        raise PipelineError(f"{where}: cannot read its {CONFIG} ({error})") from None
    if not isinstance(config, dict) or config.get("model_type") != FAMILY:
        family = config.get("model_type") if isinstance(config, dict) else None
        raise PipelineError(f"{where} is a {brief(family)} model; init loads the {FAMILY} family alone")
    sizes = {key: config.get(key) for key in ("n_layer", "n_head", "n_embd", "n_positions", "vocab_size")}
    if wrong := [f"{key} {brief(value)}" for key, value in sizes.items() if type(value) is not int or value < 1]:
        raise PipelineError(f"{where}: {CONFIG} has {', '.join(wrong)}; each must be a positive integer")
    if (activation := config.get("activation_function", "gelu_new")) not in GELU:
        raise PipelineError(f"{where}: activation_function {brief(activation)} is not GPT-2's"
                            f" ({', '.join(GELU)})")
    if config.get("n_inner") not in (None, 4 * sizes["n_embd"]) or config.get("scale_attn_by_inverse_layer_idx"):
        raise PipelineError(f"{where}: {CONFIG} sets n_inner or scale_attn_by_inverse_layer_idx, which the built-in"
                            " gpt does not have")
    if args["block_size"] > sizes["n_positions"]:
        raise PipelineError(f"model.args.block_size: {args['block_size']} is more than the {sizes['n_positions']}"
                            f" positions of {brief(folder)}")
    built = {"n_layer": sizes["n_layer"], "n_head": sizes["n_head"], "n_embd": sizes["n_embd"],
             "block_size": args["block_size"], "dropout": args.get("dropout", 0.0), "bias": True,
             "gelu": GELU[activation]}
    return built, sizes["vocab_size"]


def load_pretrained(model: torch.nn.Module, folder: str) -> None:
    """The folder's weights into a gpt built from pretrained_args (the positions past its block_size dropped);
    weights that do not fit it are one line."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    where = f"model.pretrained: {brief(folder)}"
    try:
        state = load_file(Path(folder) / WEIGHTS)
    except (OSError, SafetensorError) as error:
        raise PipelineError(f"{where}: cannot read its {WEIGHTS} ({error})") from None
    wte, ours = state.get(f"{PREFIX}wte.weight", state.get("wte.weight")), {}
    for name, tensor in state.items():
        name = name.removeprefix(PREFIX)
        if name.endswith(BUFFERS) or name == "lm_head.weight" and wte is not None and torch.equal(tensor, wte):
            continue  # a head tied to wte, as the built-in gpt's is; an untied one does not fit
        ours[name] = (tensor.t() if name.endswith(TRANSPOSED) else tensor).float()
    if "wpe.weight" in ours:
        ours["wpe.weight"] = ours["wpe.weight"][:model.wpe.num_embeddings]
    try:
        model.load_state_dict(ours)
    except RuntimeError as error:
        raise PipelineError(f"{where}: its weights do not fit the gpt its {CONFIG} describes"
                            f" ({' '.join(str(error).split())[:300]})") from None


def pretrained_id(folder: str) -> str:
    """sha256 of the folder's config.json and weights: init's parent in the lineage, so other weights are
    another init."""
    digest = hashlib.sha256()
    for name in (CONFIG, WEIGHTS):
        with open(Path(folder) / name, "rb") as file:
            while block := file.read(1 << 24):
                digest.update(block)
    return f"{FAMILY}:{digest.hexdigest()}"
