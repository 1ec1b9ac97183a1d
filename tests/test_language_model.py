"""A text as data, chunks in steps, and the knobs of language-model training: exact across chunks and kills."""

import contextlib
import copy
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import sample as sample_script
from chunktrain.recipe.checkpoint import load_checkpoint
from chunktrain.data.specs import DataParams
from chunktrain.params import load_params
from chunktrain.recipe.errors import PipelineError
from chunktrain.recipe.gpt import gpt, sample
from chunktrain.recipe.model import decay_groups
from chunktrain.recipe.splits import Tokens, read_dataset, read_tokenizer
from chunktrain.recipe.tasks import LanguageModel
from chunktrain.data.dataset import write_dataset
from chunktrain.data.text import make_tokens
from chunktrain.testing import (ROOT, TINY_TEXT_PARAMS, Project, assert_same_state, losses, measured, new_project,
                                project_env, ran, sha256, stage_command, tiny_text, write_params)
from chunktrain.recipe.batches import TextBatches

CHAR, BPE = {}, {"tokenizer": "bpe", "vocab_size": 300}  # data.tokenizer's choices, as params


@pytest.fixture
def text_params() -> dict:
    return copy.deepcopy(TINY_TEXT_PARAMS)


@pytest.fixture
def text_stages(tmp_path, text_params) -> Project:
    """Stages on a tiny text, its dataset generated."""
    stages = new_project(tmp_path, text_params, git=False)
    (tmp_path / "data").mkdir()
    (tmp_path / "data/text.txt").write_text(tiny_text())
    stages.generate()
    return stages


def text_data(path, val_fraction: float, **tokenizer) -> DataParams:
    """data params for a text at an absolute path (which params.yaml refuses: a source is inside the repo)."""
    return DataParams.model_construct(source=str(path), val_fraction=val_fraction, **{"tokenizer": "char", **tokenizer})


def text_tokens(data: DataParams) -> tuple[dict[str, np.ndarray], dict]:
    """make_tokens on the text at data.source, each split's pieces read to the end and joined."""
    splits, transform = make_tokens(data, [Path(data.source)])
    return {name: np.concatenate(list(pieces)) for name, pieces in splits.items()}, transform


def test_the_shipped_gpt_recipe_is_nanogpts_in_four_chunks():
    params = load_params(ROOT / "docs/params-gpt.yaml")
    assert params.task == "language_model" and params.model.args["n_layer"] == 4
    assert [chunk.steps for chunk in params.train.chunks.values()] == [500] * 4
    assert params.train.schedule.total == 2000 and params.train.lineage("c4") == ["c1", "c2", "c3", "c4"]


def test_a_text_becomes_a_character_vocabulary_and_train_then_val_tokens(tmp_path):
    text = "hello, wörld\n" * 50
    (tmp_path / "t.txt").write_text(text)
    splits, transform = text_tokens(text_data(tmp_path / "t.txt", val_fraction=0.2))
    assert transform == {"task": "language_model", "vocab": sorted(set(text))}
    assert [len(split) for split in splits.values()] == [520, 130]  # the last val_fraction is val
    decoded = "".join(transform["vocab"][i] for split in splits.values() for i in split.tolist())
    assert decoded == text and all(split.dtype == np.uint16 for split in splits.values())


def test_bpe_is_learnt_from_the_train_split_the_same_every_time_and_decodes_to_the_text(tmp_path):
    text = tiny_text(5_000) + "Zebra xylophone quiz.\n" * 40  # words of the val split alone
    (tmp_path / "t.txt").write_text(text)
    data = text_data(tmp_path / "t.txt", val_fraction=0.15, tokenizer="bpe", vocab_size=300)
    splits, transform = text_tokens(data)
    again, same = text_tokens(data)
    assert transform == same and all(np.array_equal(splits[name], again[name]) for name in splits)
    tokenizer = read_tokenizer(transform["tokenizer"])
    assert sample_script.decode(splits["train"].tolist() + splits["val"].tolist(), transform) == text
    assert tokenizer.get_vocab_size() == 300 and splits["train"].dtype == np.uint16
    assert tokenizer.encode(" the").tokens == ["Ġthe"]  # Ġ: GPT-2's byte-level space
    assert tokenizer.encode(" xylophone").tokens == ["Ġ", *"xylophone"]  # a val word: no merge learnt from it
    more, _ = text_tokens(text_data(tmp_path / "t.txt", val_fraction=0.15, tokenizer="bpe", vocab_size=320))
    assert len(more["train"]) < len(splits["train"])  # more merges, fewer tokens


def test_a_text_in_pieces_encodes_to_the_ids_and_learns_the_tokenizer_of_the_whole_text(monkeypatch):
    from chunktrain.data import text as text_module

    # Where a piece may end: runs of blank lines ("\n\n" is a token: a piece ending after the run would make the run
    # one word, and encode it as such), a blank line, trailing spaces and CRLF before a line, indented lines.
    text = (tiny_text(20_000).replace(".\n", ".\n\n\n").replace("\n\n\nTo", "\n\n  To").replace("\n\n\nA", "\n\nA")
            .replace("\n\n\nB", "\r\nB").replace("s.\n\n\n", "s.  \n"))
    tokenizer = text_module.learn_bpe([text], 300)
    monkeypatch.setattr(text_module, "PIECE", 100)
    read = [text[start:start + 37] for start in range(0, len(text), 37)]  # as a file's reads cut it, anywhere
    pieces = list(text_module.encode(tokenizer, read, np.uint16))
    assert tokenizer.encode("a\n\n").tokens == ["a", "ĊĊ"] and len(pieces) > 2 * text_module.BATCH
    assert np.concatenate(pieces).tolist() == tokenizer.encode(text).ids
    assert text_module.learn_bpe(read, 300).to_str() == tokenizer.to_str()  # the trainer sees the same words


def test_a_tokenizer_json_of_more_than_65536_tokens_widens_the_token_files(text_stages, text_params):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    filler = {f"<unused{i}>": i for i in range(70_000)}  # the bytes take the ids above 65,535
    alphabet = {char: len(filler) + i for i, char in enumerate(sorted(pre_tokenizers.ByteLevel.alphabet()))}
    tokenizer = Tokenizer(models.BPE(vocab={**filler, **alphabet}, merges=[]))
    tokenizer.pre_tokenizer, tokenizer.decoder = pre_tokenizers.ByteLevel(add_prefix_space=False), decoders.ByteLevel()
    (text_stages.path / "pretrained/wide").mkdir(parents=True)
    tokenizer.save(str(text_stages.path / "pretrained/wide/tokenizer.json"))
    text_params["data"]["tokenizer"] = "pretrained/wide/tokenizer.json"
    write_params(text_stages.params_path, text_params)
    text_stages.generate()
    dataset = read_dataset(text_stages.dataset)
    ids = np.fromfile(text_stages.dataset / "train.bin", dtype=np.uint32)
    assert len(ids) == 18_000 and ids.min() >= 70_000  # one byte, one token: the text is ASCII
    assert np.array_equal(dataset.split("train").windows(np.array([5]), 4)[0], ids[5:9])
    text_stages.init()
    assert load_checkpoint(text_stages.checkpoint("init"))["model_config"]["inputs"] == 70_256


@pytest.mark.parametrize("content, message", [
    (b"caf\xe9\n", r"is not UTF-8 text \(byte 3: invalid continuation byte\)"),
    (b"", "has 0 characters, too few for a train split"),
    (b"abcdefghij", "has 10 characters, too few for a val split of at least 2"),
])
def test_a_bad_text_is_one_line(tmp_path, content, message):
    (tmp_path / "t.txt").write_bytes(content)
    with pytest.raises(PipelineError, match=message):
        text_tokens(text_data(tmp_path / "t.txt", val_fraction=0.1))


def test_a_split_that_bpe_encodes_to_one_token_is_one_line_and_leaves_no_dataset(tmp_path):
    (tmp_path / "t.txt").write_text("ab\n" * 400 + "ab")  # the val split: the last "ab", one token once merged
    data = text_data(tmp_path / "t.txt", val_fraction=0.0015, tokenizer="bpe", vocab_size=300)
    splits, transform = make_tokens(data, [tmp_path / "t.txt"])
    (tmp_path / "dataset").mkdir()
    (tmp_path / "dataset/dataset.json").write_text("{}")  # a last run's
    with pytest.raises(PipelineError, match=r"'s val split is 1 token\(s\) with data.tokenizer 'bpe', too few"):
        write_dataset({f"{name}.bin": (ids.tobytes() for ids in pieces) for name, pieces in splits.items()}, transform,
                      tmp_path / "dataset")
    assert not (tmp_path / "dataset/dataset.json").exists()


def mixed_text() -> str:
    """tiny_text with what a cut between reads, pieces or files may meet: blank lines and runs of them, trailing
    spaces, CRLF line ends, indented lines, and characters of 2, 3 and 4 bytes."""
    return (tiny_text(30_000, seed=3).replace(" the ", " thé ").replace(" mind ", " 日本 ").replace(" or ", " 🙂 ")
            .replace("s.\n", "s.\r\n").replace("e.\n", "e.\n\n").replace("n.\n", "n.\n\n\n").replace("d.\n", "d.  \n")
            .replace("t.\n", "t.\n\t"))


# The dataset ids of mixed_text (val_fraction 0.1; bpe: vocab_size 300) as generate wrote them when it held the whole
# text in memory (737fe61): reading it in pieces, from one file or from a folder's, must keep the same dataset.
WHOLE_TEXT_IDS = {"char": "bee19638a0529114b253a1cd9334758c544359db956b4926f74650ee98bac401",
                  "bpe": "1d255d79e896dfbb46144b08f1c2e858b64686598df9d71afb0939c5665974d9"}


def folder_of(text: str) -> dict[str, str]:
    """`text` cut into a folder's files (inside a CRLF, before a 4-byte character, inside a line), named so that only
    the folder-by-folder order of their paths joins them back: a string sort would read b-c.txt before b/."""
    cuts = [0, text.index("\r\n", 5_000) + 1, text.index("🙂", 12_000), 20_001, len(text)]
    names = ["a.txt", "b/1.txt", "b/2.txt", "b-c.txt"]
    return {name: text[start:stop] for name, start, stop in zip(names, cuts, cuts[1:])}


@pytest.mark.parametrize("tokenizer", [CHAR, BPE], ids=["char", "bpe"])
def test_a_folder_of_texts_makes_the_dataset_of_their_text_joined_in_path_order(tmp_path, monkeypatch, text_params,
                                                                                tokenizer):
    from chunktrain.data import text as text_module

    text_params["data"].update(tokenizer)
    stages = new_project(tmp_path, text_params, git=False)
    (stages.root / "data").mkdir()
    (stages.root / "data/text.txt").write_bytes(mixed_text().encode())
    stages.generate()
    name = tokenizer.get("tokenizer", "char")
    assert read_dataset(stages.dataset).id == WHOLE_TEXT_IDS[name]

    corpus = stages.root / "data/corpus"
    ignored = {"notes.md": b"not a .txt\n", ".hidden.txt": b"\xff", ".cache/a.txt": b"\xff", "b/README": b"\xff"}
    for path, content in {**{path: text.encode() for path, text in folder_of(mixed_text()).items()}, **ignored}.items():
        (corpus / path).parent.mkdir(parents=True, exist_ok=True)
        (corpus / path).write_bytes(content)
    text_params["data"]["source"] = "data/corpus"
    write_params(stages.params_path, text_params)
    for constant, size in (("READ", 7), ("PIECE", 100), ("BATCH", 3)):  # reads and pieces cut the text everywhere
        monkeypatch.setattr(text_module, constant, size)
    stages.generate()
    files = DataParams.model_validate(text_params["data"]).source_files(stages.root)
    assert [path.relative_to(corpus).as_posix() for path in files] == list(folder_of(mixed_text()))
    assert read_dataset(stages.dataset).id == WHOLE_TEXT_IDS[name]


@pytest.mark.parametrize("content, message", [
    (b"ok\ncaf\xe9\n", r"'data/corpus/b.txt' is not UTF-8 text \(byte 6: invalid continuation byte\)$"),
    (b"ok\ncaf\xc3", r"'data/corpus/b.txt' is not UTF-8 text \(byte 6: unexpected end of data\)$"),
])
def test_a_file_of_a_folder_that_is_not_utf8_is_one_line_naming_it_and_the_byte(tmp_path, monkeypatch, text_params,
                                                                                 content, message):
    from chunktrain.data import text as text_module

    text_params["data"]["source"] = "data/corpus"
    stages = new_project(tmp_path, text_params, git=False)
    (stages.root / "data/corpus").mkdir(parents=True)
    (stages.root / "data/corpus/a.txt").write_text(tiny_text(100))
    (stages.root / "data/corpus/b.txt").write_bytes(content)
    stages.plan()
    monkeypatch.setattr(text_module, "READ", 4)  # the bad byte in the file's second read
    with pytest.raises(PipelineError, match=message):
        stages.stage("generate")


@pytest.mark.slow
def test_dvc_reruns_generate_when_a_text_joins_the_folder(tmp_path, text_params):
    text_params["data"]["source"] = "data/corpus"
    project = new_project(tmp_path / "repo", text_params)
    corpus = project.path / "data/corpus"
    corpus.mkdir(parents=True)
    (corpus / "a.txt").write_text(tiny_text(10_000))
    project.commit("a corpus")
    assert "generate" in project.repro("generate")
    first = read_dataset(project.dataset)
    assert len(first.split("train")) == 9_000
    (corpus / "b").mkdir()
    (corpus / "b/c.txt").write_text(tiny_text(10_000, seed=1))
    assert project.repro("generate") == {"generate"}
    again = read_dataset(project.dataset)
    assert again.id != first.id and len(again.split("train")) == 18_000


def test_generate_holds_pieces_of_a_text_in_memory_not_the_text(tmp_path, text_params):
    """generate's peak RSS on 30 MB of text exceeds that on 1 MB by less than the text's size: holding the whole
    text, it took 13 times the text's size."""
    megabyte, peaks = tiny_text(1_000_000), {}
    for size in (1, 30):
        stages = new_project(tmp_path / f"{size}mb", text_params, git=False)
        (stages.root / "data").mkdir()
        with open(stages.root / "data/text.txt", "w") as file:
            for _ in range(size):
                file.write(megabyte)
        stages.plan()
        _, peaks[size], _ = measured(["sh", "-c", stage_command("generate")], cwd=stages.root, env=project_env())
    assert peaks[30] - peaks[1] < 30e6, peaks


def test_generate_writes_token_files_that_training_reads_window_by_window(text_stages):
    dataset = read_dataset(text_stages.dataset)
    assert sorted(path.name for path in text_stages.dataset.iterdir()) == ["dataset.json", "train.bin", "val.bin"]
    train = dataset.split("train")
    ids = np.fromfile(text_stages.dataset / "train.bin", dtype=np.uint16)
    assert len(train) == len(ids) == 18_000 and dataset.is_text
    assert np.array_equal(train.windows(np.array([0, 17_990]), 10), np.stack([ids[:10], ids[17_990:]]))


def test_a_steps_batch_is_a_function_of_seed_and_step_and_its_targets_are_the_next_tokens(tmp_path):
    np.arange(1000, dtype=np.uint16).tofile(tmp_path / "tokens.bin")
    tokens = Tokens(tmp_path / "tokens.bin")
    batches = TextBatches(tokens, tokens, windows=4, block_size=8, steps=5, eval_batches=2, eval_windows=3,
                          seed=0, device=torch.device("cpu"))
    first = list(batches.round(epoch=2, first=0))
    resumed = list(batches.round(epoch=2, first=3))  # a resumed round continues with the same batches
    assert all(torch.equal(a[0], b[0]) for a, b in zip(first[3:], resumed)) and len(resumed) == 2
    x, y = first[0]
    assert x.shape == (4, 8) and torch.equal(y, x + 1)  # tokens 0..999 in order: the next token is one more
    assert not torch.equal(first[0][0], first[1][0])


def test_weight_decay_skips_biases_norms_and_embeddings_as_chosen():
    model = gpt(11, 11, n_layer=1, n_head=2, n_embd=8, block_size=4)
    names = {id(p): name for name, p in model.named_parameters()}
    decayed, kept = ([names[id(p)] for p in group["params"]] for group in decay_groups(model, "matrices"))
    assert decayed == ["h.0.attn.c_attn.weight", "h.0.attn.c_proj.weight", "h.0.mlp.c_fc.weight",
                       "h.0.mlp.c_proj.weight"]
    assert {"wte.weight", "wpe.weight", "ln_f.weight", "h.0.attn.c_attn.bias"} <= set(kept)
    nanogpt = [names[id(p)] for p in decay_groups(model, "matrices_and_embeddings")[0]["params"]]
    assert nanogpt == ["wte.weight", "wpe.weight", *decayed]
    assert len(decay_groups(model, "all")[0]["params"]) == len(names)


def test_grad_accum_averages_micro_batches_like_one_big_batch(text_stages, text_params):
    """Two micro-batches of 4 windows give the gradient of the 8 windows at once, up to float rounding."""
    from chunktrain.recipe.loop import OneProcess, train_step
    settings = load_params(text_stages.params_path).train.settings("c1")
    torch.manual_seed(0)
    model = gpt(20, 20, n_layer=1, n_head=2, n_embd=16, block_size=16)
    x = torch.randint(20, (8, 16), generator=torch.Generator().manual_seed(1))
    grads = []
    for accum in (1, 2):
        optimizer = torch.optim.SGD(model.parameters(), lr=0.0)  # no update: compare the gradients alone
        train_step(model, optimizer, x, x, settings.model_copy(update={"grad_accum": accum, "grad_clip": None}),
                   LanguageModel(), OneProcess(), contextlib.nullcontext(), torch.zeros((), dtype=torch.float64))
        grads.append([p.grad.clone() for p in model.parameters()])
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(*grads))


# train.compile: test_a_text_pipeline_is_exact_across_chunks_and_a_kill_9[char-compiled], chunked, whole and resumed
@pytest.mark.parametrize("knob, tokenizer", [({}, CHAR), ({}, BPE),
                                             pytest.param({"dtype": "bfloat16"}, CHAR, marks=pytest.mark.slow)],
                         ids=["float32", "float32-bpe", "bfloat16"])
def test_chunks_in_steps_equal_one_chunk_bit_for_bit(text_stages, text_params, knob, tokenizer):
    text_params["data"].update(tokenizer)
    text_params["train"].update(knob)
    text_params["train"]["chunks"]["whole"] = {"from": "init", "steps": 40}
    write_params(text_stages.params_path, text_params)
    text_stages.generate()
    text_stages.init()
    text_stages.train("c1")
    chunked, whole = (load_checkpoint(text_stages.train(name)) for name in ("c2", "whole"))
    assert_same_state(chunked, whole)
    assert losses(chunked) == losses(whole)
    assert [record["step"] for record in whole["history"]] == [10, 20, 30, 40]  # a val loss every eval_every


@pytest.mark.slow
def test_bfloat16_autocast_changes_the_numbers(text_stages, text_params):
    text_stages.init()
    float32 = losses(load_checkpoint(text_stages.train("c1")))
    text_params["train"]["dtype"] = "bfloat16"
    write_params(text_stages.params_path, text_params)
    assert losses(load_checkpoint(text_stages.train("c1"))) != float32


def test_sample_prints_the_same_text_for_the_same_seed(text_stages, capsys):
    text_stages.init()
    checkpoint = text_stages.train("c1")
    capsys.readouterr()
    outputs = []
    for seed in (0, 0, 1):
        sample_script.main(["--checkpoint", str(checkpoint), "--prompt", "To be", "--tokens", "40",
                            "--seed", str(seed)])
        outputs.append(capsys.readouterr().out)
    assert outputs[0] == outputs[1] != outputs[2] and outputs[0].startswith("To be") and len(outputs[0]) == 46


def test_sample_in_pieces_for_its_progress_bar_draws_the_text_of_one_call():
    model = gpt(20, 20, n_layer=1, n_head=2, n_embd=16, block_size=8).eval()
    how = {"temperature": 0.8, "top_k": 5, "block_size": 8}
    prompt = torch.tensor([1, 2, 3])
    whole = sample(model, prompt, 25, generator=torch.Generator().manual_seed(3), **how)
    pieces = sample_script.generate(model, prompt, 25, generator=torch.Generator().manual_seed(3), **how)
    assert len(whole) == 28 and torch.equal(pieces, whole)


def test_evaluate_chooses_the_best_chunk_on_the_val_loss_of_a_text(text_stages):
    text_stages.init()
    text_stages.train("c1")
    text_stages.train("c2")
    text_stages.evaluate()
    best = json.loads((text_stages.root / "metrics/best.json").read_text())
    assert best.keys() == {"chunk", "step", "train_loss", "val_loss", "checkpoint"}  # no test split, no epochs
    assert best["chunk"] == "c2" and best["step"] == 40


@pytest.mark.slow
# Characters run compiled: eager characters are what every other text test trains, and the tokenizer does not
# change how a chunk resumes; eager, the pipeline runs with bpe.
@pytest.mark.parametrize("tokenizer, compile", [(BPE, False), (CHAR, True)], ids=["bpe", "char-compiled"])
def test_a_text_pipeline_is_exact_across_chunks_and_a_kill_9(tmp_path, monkeypatch, tokenizer, compile):
    """Under dvc repro: {c1: 40 steps, c2: 40 steps} equals {whole: 80 steps} (grad_accum, clip, warmup, cosine,
    dropout), and a chunk killed mid-way resumes from its snapshot to the same bytes. With train.compile, only the
    first chunk compiles: every later one, a new process, loads inductor's kernels from the project's cache."""
    # inductor's cache_dir() writes its folder to os.environ whenever this process compiles outside a stage's saved
    # environment (its default, /tmp/torchinductor_<user>); inherited, it would win over the project's cache below
    monkeypatch.delenv("TORCHINDUCTOR_CACHE_DIR", raising=False)
    params = copy.deepcopy(TINY_TEXT_PARAMS)
    params["data"].update(tokenizer)
    params["train"].update(snapshot_every_steps=10, compile=compile,
                           chunks={"c1": {"from": "init", "steps": 40}, "c2": {"from": "c1", "steps": 40},
                                   "whole": {"from": "init", "steps": 80}})
    project = new_project(tmp_path / "repo", params)
    (project.path / "data").mkdir(exist_ok=True)
    (project.path / "data/text.txt").write_text(tiny_text())
    project.commit("a text")
    cache = project.path / ".cache/inductor"
    if compile:
        assert ", compiled" in project.dvc("repro", "train@c1")
        compiled = files_under(cache)
        assert compiled  # c1's graphs and kernels
    project.dvc("repro")
    checkpoints = project.path / "data/checkpoints"
    assert_same_state(load_checkpoint(checkpoints / "c2.pt"), load_checkpoint(checkpoints / "whole.pt"))
    uninterrupted = sha256(checkpoints / "c2.pt")

    shutil.copy(ROOT / "Makefile", project.path / "Makefile")
    make_sample = ["make", "--no-print-directory", "-o", ".venv/.installed", "sample", "PROMPT=To be", "TOKENS=30"]
    samples = [project.run(*make_sample).stdout for _ in range(2)]
    # the best chunk's model, the same seed: the same text, the prompt and 30 tokens (characters, with char)
    assert samples[0] == samples[1] and samples[0].startswith("To be")
    assert len(samples[0]) == len("To be") + 31 if tokenizer == CHAR else len(samples[0]) > len("To be") + 31

    killed = project.run("dvc", "repro", "-f", "-s", "train@c2", check=False, env={"CHUNKTRAIN_KILL_AT": "step:25"})
    assert killed.returncode != 0 and not (checkpoints / "c2.pt").exists()
    listed = project.run("python", "-m", "chunktrain.runner.snapshots", env={"PYTHONPATH": "src"}).stdout
    assert listed.startswith(".resume/c2/snapshot.pt: step 20 of the chunk (global step 60)"), listed  # as logs say
    resumed = project.dvc("repro", "-f", "-s", "train@c2")
    assert "resuming c2 from step 20 of the chunk" in resumed
    assert sha256(checkpoints / "c2.pt") == uninterrupted
    # a compiled chunk's checkpoint holds the module's own keys (no _orig_mod.), which evaluate and sample load
    assert load_checkpoint(checkpoints / "c2.pt")["model_state_dict"].keys() == \
        load_checkpoint(checkpoints / "init.pt")["model_state_dict"].keys()
    if compile:  # c2, whole, the killed c2 and its resume compiled nothing that c1 had not
        assert files_under(cache) == compiled
        assert ".cache" not in project.run("git", "status", "--porcelain", "--untracked-files=all").stdout


def files_under(folder) -> set[str]:
    return {str(path.relative_to(folder)) for path in folder.rglob("*") if path.is_file()}


@pytest.mark.slow
def test_your_own_model_under_src_models_trains_and_an_edit_reruns_what_builds_it(tmp_path, params):
    params["model"] = {"task": "regression", "arch": "models.tiny:build", "args": {"width": 8}}
    project = new_project(tmp_path / "repo", params)
    model = project.path / "src/models/tiny.py"
    model.write_text("from torch import nn\n\n\ndef build(inputs, outputs, *, width):\n"
                     "    return nn.Sequential(nn.Linear(inputs, width), nn.Tanh(), nn.Linear(width, outputs))\n")
    project.commit("my model")
    assert "train@c3" in ran(project.dvc("repro"))
    model.write_text(model.read_text().replace("nn.Tanh()", "nn.ReLU()"))
    assert ran(project.dvc("repro")) == {"init", "train@c1", "train@c2", "train@c3", "evaluate"}

    params["model"]["args"] = {"depth": 2}
    write_params(project.path / "params.yaml", params)
    failed = project.run("dvc", "repro", check=False)
    assert failed.returncode != 0 and "model.args: {'depth': 2} do not fit models.tiny:build" in failed.stdout


@pytest.mark.parametrize("args, message", [
    ({"hidden": [16, 0]}, r"model.args: mlp cannot build from .*hidden: \[16, 0\] must be a list of layer widths"),
    ({"hidden": [-1]}, "each a positive integer"),
    ({"hidden": [16], "depth": 2}, "do not fit mlp: got an unexpected keyword argument 'depth'"),
])
def test_init_refuses_args_the_builder_cannot_use_in_one_line(tmp_path, params, args, message):
    params["model"]["args"] = args
    stages = new_project(tmp_path, params, git=False)
    stages.generate()
    with pytest.raises(PipelineError, match=message):
        stages.init()


def test_model_args_are_few_plain_json_values(tmp_path, params):
    params["model"]["args"] = {"hidden": [[1] * 100] * 101}
    with pytest.raises(PipelineError, match="model.args: more than 10000 values"):
        load_params(write_params(tmp_path / "params.yaml", params))
    params["model"]["args"] = {"when": "2026-11-30", "at": float("inf")}
    with pytest.raises(PipelineError, match="model.args.at: inf is not a JSON value"):
        load_params(write_params(tmp_path / "params.yaml", params))


@pytest.mark.parametrize("transform, message", [
    ({"task": "language_model", "tokenizer": "{}"}, "transform: not a tokenizer.json"),
    ({"task": "language_model"}, "transform: a text's transform holds either vocab"),
    ({"task": "language_model", "vocab": ["a"], "tokenizer": "{}"}, "transform: a text's transform holds either"),
])
def test_a_forged_text_transform_is_one_line(transform, message):
    from chunktrain.recipe.splits import check_transform

    with pytest.raises(PipelineError, match=message):
        check_transform(transform)


def test_the_dataset_id_follows_the_tokenizer_and_another_process_learns_the_same_bytes(text_stages, text_params):
    ids = []
    for tokenizer in (CHAR, BPE, {**BPE, "vocab_size": 320}):
        text_params["data"] = {**TINY_TEXT_PARAMS["data"], **tokenizer}
        write_params(text_stages.params_path, text_params)
        text_stages.generate()
        ids.append(read_dataset(text_stages.dataset).id)
    assert len(set(ids)) == 3
    subprocess.run([sys.executable, "src/generate.py", "--spec", "data/plan/data.json", "--out", "data/again"],
                   cwd=text_stages.path, check=True, capture_output=True)
    for name in ("dataset.json", "train.bin", "val.bin"):
        assert sha256(text_stages.path / "data/again" / name) == sha256(text_stages.dataset / name)
