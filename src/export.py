"""Write a language model's checkpoint as a Hugging Face GPT-2 folder: config.json, model.safetensors and the
tokenizer's files, which transformers' AutoModelForCausalLM.from_pretrained and AutoTokenizer.from_pretrained load.

Not a DVC stage: run it on any checkpoint of a text pipeline whose model.arch is gpt, e.g.
python src/export.py --checkpoint data/checkpoints/c4.pt --huggingface exported/c4
The weights are the chunk's best round's, those sample.py and evaluate use. transformers is imported here alone.
"""

import argparse
from pathlib import Path

import torch

from chunktrain.data.text import END_OF_TEXT
from chunktrain.recipe.checkpoint import MODEL_CONFIG, TRANSFORM, load_checkpoint
from chunktrain.recipe.errors import PipelineError, run_stage
from chunktrain.recipe.model import load_trained
from chunktrain.recipe.pretrained import PREFIX, TRANSPOSED
from chunktrain.recipe.splits import is_text, read_tokenizer

ACTIVATION = {"none": "gelu", "tanh": "gelu_pytorch_tanh"}  # the gpt's gelu -> transformers' identical function


def gpt2_config(config: dict, tokenizer) -> "transformers.GPT2Config":
    """GPT-2's config for a checkpoint's model_config: our GPT is GPT-2's layout (recipe/pretrained.py)."""
    from transformers import GPT2Config

    args = {"dropout": 0.0, **config["args"]}
    eos = tokenizer.token_to_id(END_OF_TEXT)
    return GPT2Config(vocab_size=config["inputs"], n_positions=args["block_size"], n_embd=args["n_embd"],
                      n_layer=args["n_layer"], n_head=args["n_head"],
                      activation_function=ACTIVATION[args.get("gelu", "none")],
                      layer_norm_epsilon=1e-5, resid_pdrop=args["dropout"], embd_pdrop=args["dropout"],
                      attn_pdrop=args["dropout"], bos_token_id=eos, eos_token_id=eos, tie_word_embeddings=True)


def gpt2_state(state: dict[str, torch.Tensor], gpt2: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Our GPT's state dict under GPT-2's names: Linear weights transposed for Conv1D, and zero biases where
    model.args.bias is false (GPT-2 always has them). The output layer is wte itself in both (tied)."""
    out = {f"{PREFIX}{name}": tensor.t().contiguous() if name.endswith(TRANSPOSED) else tensor
           for name, tensor in state.items()}
    for name, tensor in gpt2.state_dict().items():
        if name.endswith(".bias"):
            out.setdefault(name, torch.zeros_like(tensor))
    return out


def character_tokenizer(vocab: list[str]):
    """A character vocabulary as a Hugging Face tokenizer: each character one token, decoded by joining them."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers

    tokenizer = Tokenizer(models.WordLevel({char: index for index, char in enumerate(vocab)}, unk_token=vocab[0]))
    tokenizer.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
    tokenizer.decoder = decoders.Fuse()
    return tokenizer


def export(checkpoint_path: Path, folder: Path) -> None:
    """Write the checkpoint's model and tokenizer into `folder` as transformers' GPT-2."""
    try:
        from transformers import GPT2LMHeadModel, PreTrainedTokenizerFast
    except ModuleNotFoundError:
        raise PipelineError("export needs transformers, which `make run` does not install: `make huggingface`"
                            " installs it (requirements-export.txt)") from None

    checkpoint = load_checkpoint(checkpoint_path)
    transform, config = checkpoint[TRANSFORM], checkpoint[MODEL_CONFIG]
    if not is_text(transform) or config.get("arch") != "gpt":
        what = f"model.arch {config.get('arch')}" if is_text(transform) else f"a {transform.get('task')} model"
        raise PipelineError(f"--checkpoint {checkpoint_path} is {what}; export writes the built-in gpt alone")
    model = load_trained(checkpoint, checkpoint_path)
    tokenizer = (read_tokenizer(transform["tokenizer"]) if transform.get("tokenizer") is not None
                 else character_tokenizer(transform["vocab"]))
    hf_config = gpt2_config(config, tokenizer)
    hf_model = GPT2LMHeadModel(hf_config)
    missing, unexpected = hf_model.load_state_dict(gpt2_state(model.state_dict(), hf_model), strict=False)
    if unexpected or set(missing) - {"lm_head.weight"}:  # the head is tied to wte
        raise AssertionError(f"GPT-2's layout does not fit ours: missing {missing}, unexpected {unexpected}")
    folder.mkdir(parents=True, exist_ok=True)
    hf_model.eval().save_pretrained(folder)
    special = {"eos_token": END_OF_TEXT, "bos_token": END_OF_TEXT} if hf_config.eos_token_id is not None else {}
    PreTrainedTokenizerFast(tokenizer_object=tokenizer, model_max_length=hf_config.n_positions,
                            **special).save_pretrained(folder)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", type=Path, required=True, help="data/checkpoints/<chunk>.pt of a text pipeline")
    parser.add_argument("--huggingface", type=Path, required=True,
                        help="folder to write config.json, model.safetensors and the tokenizer's files into")
    args = parser.parse_args(argv)
    if args.huggingface.exists() and not args.huggingface.is_dir():
        raise PipelineError(f"--huggingface {args.huggingface}: a file, not a folder")
    export(args.checkpoint, args.huggingface)
    print(f"export: {args.checkpoint} -> {args.huggingface} (transformers' GPT-2)")


if __name__ == "__main__":
    run_stage(main)
