"""What fine-tuning a GPT-2-sized model costs here, each step as README's "Fine-tune a pretrained model" takes it.

No network reaches GPT-2's own weights here, so the folder a user would download is made in its place: GPT-2's
body (12 layers, 12 heads, 768 wide, GPT2Config's defaults) with random weights and a byte-level BPE of 8,192 tokens
learnt from the corpus, as `save_pretrained` writes it. Its costs per step are GPT-2's but for the smaller
vocabulary (GPT-2 has 50,257 tokens: its embedding and output layer are 6 times the size). Then, each a process:
`python src/run.py` (dvc repro: generate, init, chunks c1 and c2 of 10 steps, evaluate; its wall time per stage),
src/export.py, and transformers loading the export and sampling 30 tokens. Prints; writes nothing.

python benchmarks/finetune.py [--corpus PATH]    # about 3 minutes on 2 cores, 4 GB of temp files

It needs transformers, which `make huggingface` or `make test` installs into .venv.
"""

import argparse
import copy
import tempfile
import time
from pathlib import Path

from bench import PYTHON, wall
from gpt import CORPUS
from peers import STAGE_TIME, seconds

from chunktrain.testing import TINY_TEXT_PARAMS, new_project  # noqa: E402

SIZES = {"gpt2": {"n_layer": 12, "n_head": 12, "n_embd": 768, "vocab": 8192, "block_size": 256},
         "tiny": {"n_layer": 2, "n_head": 2, "n_embd": 32, "vocab": 300, "block_size": 64}}  # the tests'
FOLDER = "pretrained/gpt2-sized"
SAMPLE = ('import sys; from transformers import AutoModelForCausalLM, AutoTokenizer; import torch; torch.manual_seed(0);'
          ' model, tokenizer = AutoModelForCausalLM.from_pretrained(sys.argv[1]), AutoTokenizer.from_pretrained(sys.argv[1]);'
          ' ids = model.generate(**tokenizer("ROMEO:", return_tensors="pt"), max_new_tokens=30, do_sample=True);'
          ' print(repr(tokenizer.decode(ids[0])))')


def pretrained_folder(folder: Path, text: str, size: dict) -> int:
    """A GPT-2 folder of random weights and a BPE learnt from `text`, as a user's download would be; its parameters."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    from chunktrain.data.text import learn_bpe

    tokenizer = learn_bpe([text], size["vocab"])
    folder.mkdir(parents=True)
    tokenizer.save(str(folder / "tokenizer.json"))
    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(vocab_size=tokenizer.get_vocab_size(), n_positions=max(size["block_size"], 1024),
                                       n_layer=size["n_layer"], n_head=size["n_head"], n_embd=size["n_embd"]))
    model.save_pretrained(folder)
    return model.num_parameters()


def params(size: dict) -> dict:
    """Two chunks of 10 steps, 4 windows of block_size tokens each, from the pretrained init."""
    chosen = copy.deepcopy(TINY_TEXT_PARAMS)
    chosen["model"] = {"task": "language_model", "arch": "gpt", "pretrained": FOLDER,
                       "args": {"block_size": size["block_size"], "dropout": 0.0}}
    chosen["train"].update(lr=3e-5, batch_size=4, grad_accum=1, eval_every=10, eval_batches=4,
                           schedule={"warmup": 0, "decay": "cosine", "total": 20, "min_lr": 3e-6},
                           chunks={"c1": {"from": "init", "steps": 10}, "c2": {"from": "c1", "steps": 10}})
    return chosen


def finetune(work: Path, corpus: Path, size: dict) -> dict:
    """Each step's seconds, the sizes, and the sample transformers drew from the export."""
    project = new_project(work, params(size))
    (work / "data").mkdir(exist_ok=True)
    text = corpus.read_text(encoding="utf-8")
    (work / "data/text.txt").write_text(text, encoding="utf-8")
    started = time.perf_counter()
    parameters = pretrained_folder(work / FOLDER, text, size)
    made = time.perf_counter() - started
    project.commit("a pretrained folder")
    took, output = wall([PYTHON, "src/run.py"], cwd=work)
    stages = {name: seconds(text) for name, text in STAGE_TIME.findall(output)}
    exported, _ = wall([PYTHON, "src/export.py", "--checkpoint", "data/checkpoints/c2.pt", "--huggingface",
                        "exported"], cwd=work)
    sampled, sample = wall([PYTHON, "-c", SAMPLE, "exported"], cwd=work)
    megabytes = {name: round(sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 1e6)
                 if path.is_dir() else round(path.stat().st_size / 1e6)
                 for name, path in (("pretrained folder", work / FOLDER), ("init.pt", work / "data/checkpoints/init.pt"),
                                    ("c2.pt", work / "data/checkpoints/c2.pt"), ("export", work / "exported"))}
    return {"parameters": parameters, "seconds": {"making the pretrained folder": made, **stages,
                                                  "export": exported, "transformers: load and 30 tokens": sampled},
            "megabytes": megabytes, "sample": sample.strip().splitlines()[-1]}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus", type=Path, default=CORPUS,
                        help="tiny Shakespeare, 1.1 MB (default: ../shared/data/tinyshakespeare.txt beside the repo)")
    parser.add_argument("--size", choices=SIZES, default="gpt2", help="tiny: the tests' smoke run")
    args = parser.parse_args(argv)
    if not args.corpus.is_file():
        parser.error(f"no corpus at {args.corpus}: give a text's path with --corpus")
    with tempfile.TemporaryDirectory(prefix="chunktrain-finetune-") as work:
        result = finetune(Path(work) / "repo", args.corpus, SIZES[args.size])
    print(f"{result['parameters']:,} parameters ({args.size}); chunks of 10 steps of 4 windows of"
          f" {SIZES[args.size]['block_size']} tokens")
    for name, value in result["seconds"].items():
        print(f"  {name:<36}{value:8.1f} s")
    for name, value in result["megabytes"].items():
        print(f"  {name:<36}{value:8,} MB")
    print(f"  sample: {result['sample']}")
    return result


if __name__ == "__main__":
    main()
