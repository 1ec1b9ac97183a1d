"""The benchmarks are not run by the suite (they take minutes); these hold what their figures rest on."""

import importlib.util
import json
import math
import re
import sys

import numpy as np
import pytest
import torch
import yaml

from chunktrain.params import Params
from chunktrain.recipe.model import decay_groups
from chunktrain.testing import ROOT, project_env, ran, run, tiny_text

sys.path.insert(0, str(ROOT / "benchmarks"))
import bench  # noqa: E402
import bpe  # noqa: E402
import corpus  # noqa: E402
import finetune  # noqa: E402
import gpt  # noqa: E402
import peers  # noqa: E402
import plain_gpt  # noqa: E402

# benchmarks/tables.py by its path: the tests' own tables.py (tests/) holds the name
_spec = importlib.util.spec_from_file_location("bench_tables", ROOT / "benchmarks/tables.py")
bench_tables = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench_tables)


def test_the_benchmark_pipelines_have_valid_params():
    params = Params.model_validate(bench.pipeline_params(n_samples=30_000, chunks=5, epochs=2))
    assert list(params.train.chunks) == ["c1", "c2", "c3", "c4", "c5"]
    assert params.train.lineage("c5") == ["c1", "c2", "c3", "c4", "c5"]


@pytest.mark.parametrize("variant", bench_tables.VARIANTS)
def test_the_table_benchmark_trains_the_shipped_table_settings_or_a_variant_of_them(variant):
    def dump(params, section):
        return getattr(params, section).model_dump(exclude={"task"})

    params = bench_tables.table_params("table.csv", "label", "classification", ["id"], bench_tables.VARIANTS[variant])
    settings = Params.model_validate(params)
    shipped = Params.model_validate(yaml.safe_load((ROOT / "params.yaml").read_text()))
    assert (settings.data.source, settings.model.task, settings.data.exclude) == ("table.csv", "classification", ["id"])
    changed = {key for key in ("model", "train")  # the task aside, which any own table sets
               if dump(settings, key) != dump(shipped, key)}
    assert changed == {key.split(".")[0] for key in bench_tables.VARIANTS[variant]}


@pytest.mark.parametrize("steps", [16, 2000])
def test_the_gpt_recipe_has_valid_params_scaled_to_its_length(steps):
    params = Params.model_validate(gpt.recipe_params(steps))
    assert params.train.lineage("c4") == ["c1", "c2", "c3", "c4"]
    assert [params.train.chunks[name].steps for name in ("c1", "whole")] == [steps // 4, steps]
    assert params.train.schedule.total == steps


def test_the_shipped_gpt_recipe_is_the_one_the_plain_loop_runs():
    """gpt.py trains docs/params-gpt.yaml, plain_gpt.py nanoGPT's numbers (RECIPE): the same recipe, or no baseline."""
    params = yaml.safe_load((ROOT / "docs/params-gpt.yaml").read_text())
    train, recipe = params["train"], plain_gpt.RECIPE
    assert params["model"]["args"] == {name: recipe[name] for name in plain_gpt.MODEL_ARGS}
    same = ("lr", "batch_size", "weight_decay", "betas", "grad_clip", "eval_every", "eval_batches")
    assert {key: train[key] for key in same} == {key: recipe[key] for key in same}
    assert train["schedule"] == {"warmup": recipe["warmup"], "decay": "cosine", "total": recipe["total"],
                                 "min_lr": recipe["min_lr"]}
    assert (train["optimizer"], train["grad_accum"], train["dtype"], train["decay_params"]) == (
        "adamw", 1, "float32", "matrices_and_embeddings")


def test_the_plain_gpt_loop_decays_the_parameters_chunktrain_decays():
    """The baseline's AdamW groups (nanoGPT's) are the recipe's, so both do the same work per step."""
    model = plain_gpt.gpt(30, 30, **{name: plain_gpt.RECIPE[name] for name in plain_gpt.MODEL_ARGS})
    plain = plain_gpt.param_groups(model, 0.1)
    ours = decay_groups(model, "matrices_and_embeddings")
    for group, our_group in zip(plain, ours, strict=True):
        assert [id(p) for p in group["params"]] == [id(p) for p in our_group["params"]]
    assert plain[0]["weight_decay"] == 0.1 and any(p is model.wte.weight for p in plain[0]["params"])


@pytest.mark.slow
def test_the_gpt_benchmark_names_the_option_for_a_missing_corpus(tmp_path):
    result = run([sys.executable, str(ROOT / "benchmarks/gpt.py"), "--corpus", str(tmp_path / "none.txt")],
                 check=False, merge_stderr=False)
    assert result.returncode == 2
    assert f"no corpus at {tmp_path / 'none.txt'}" in result.stderr and "--corpus" in result.stderr


@pytest.mark.parametrize("steps", [2000, 200])
def test_nanogpt_runs_the_recipe_our_chunks_run(steps):
    """The peer's command line (nanoGPT's train.py flags) against the params our 4 chunks train with."""
    flags = dict(word.removeprefix("--").split("=", 1) for word in peers.nanogpt_command(steps) if "=" in word)
    params = gpt.recipe_params(steps)
    args, train = params["model"]["args"], params["train"]
    assert {key: int(flags[key]) for key in ("n_layer", "n_head", "n_embd", "block_size")} == \
        {key: args[key] for key in ("n_layer", "n_head", "n_embd", "block_size")}
    assert float(flags["dropout"]) == args["dropout"] and flags["compile"] == "False"
    assert int(flags["batch_size"]) == train["batch_size"] and int(flags["eval_iters"]) == train["eval_batches"]
    assert int(flags["eval_interval"]) == train["eval_every"]
    assert int(flags["warmup_iters"]) == train["schedule"]["warmup"]
    assert int(flags["max_iters"]) == int(flags["lr_decay_iters"]) == train["schedule"]["total"] == steps
    assert sum(chunk["steps"] for name, chunk in train["chunks"].items() if name != "whole") == steps


def test_the_vendored_nanogpt_trains_on_its_prepared_text_and_reports_a_val_loss(tmp_path):
    """nanoGPT's own train.py runs under this torch on the data peers.py prepares as nanoGPT's prepare.py does."""
    corpus = tmp_path / "text.txt"
    corpus.write_text(tiny_text(20_000))
    folder = peers.nanogpt_folder(tmp_path, corpus)
    command = [word for word in peers.nanogpt_command(8) if not word.startswith(("--n_layer", "--n_embd"))]
    result = run([*command, "--n_layer=1", "--n_embd=16", "--eval_iters=2"], cwd=folder,
                 env=dict(project_env(), OMP_NUM_THREADS="1"))
    assert 0 < float(re.findall(r"val loss (\d+\.\d+)", result.stdout)[-1]) < 10, result.stdout


@pytest.mark.slow
def test_the_gpt_benchmark_reports_its_figures_and_four_chunks_equal_one(tmp_path):
    """A smoke run of `make bench`'s GPT recipe, 16 steps on a made-up text: every figure is there, and the
    checkpoint of c1..c4 holds what one 16-step chunk's does, bit for bit."""
    corpus = tmp_path / "text.txt"
    corpus.write_text(tiny_text(20_000))
    result = gpt.recipe(tmp_path / "work", corpus, steps=16, threads=1)
    assert result["difference"] is None
    assert result["val_loss"] == result["whole_val_loss"]
    # the benchmark's own val loss of c4's weights is the one the chunk measured, on the same seeded batches
    assert result["val_losses"]["chunks"][20] == pytest.approx(result["val_loss"], abs=1e-6)
    rows = gpt.recipe_figures(result)
    assert [row["figure"] for row in rows] == ["GPT val loss at step 16", "GPT val loss at step 16 vs plain",
                                               "GPT chunk stage throughput", "4 chunks of 4 steps vs 1 of 16"]
    assert all(math.isfinite(row["value"]) and row["value"] > 0 and row["baseline"] > 0 for row in rows)
    assert rows[3]["met"]
    assert all(run["in_loop"] for run in result["stage"] + result["plain"])  # the stage's progress lines parsed


@pytest.mark.parametrize("bpe_vocab", [None, 4096])
def test_the_tokenizer_benchmark_trains_the_gpt_recipe_with_a_tokenizer_and_its_own_steps(bpe_vocab):
    params = Params.model_validate(bpe.variant_params(bpe_vocab, steps=1230, warmup=100))
    recipe = Params.model_validate(yaml.safe_load((ROOT / "docs/params-gpt.yaml").read_text()))
    assert (params.data.tokenizer, params.data.vocab_size) == (("bpe", 4096) if bpe_vocab else ("char", None))
    assert params.model == recipe.model  # the same model: only the vocabulary it is built for differs
    assert params.train.chunks["c1"].steps == params.train.schedule.total == params.train.eval_every == 1230
    assert params.train.schedule.warmup == 100 and list(params.train.chunks) == ["c1"]


def test_the_tokenizer_benchmark_takes_the_val_loss_of_every_token_once(monkeypatch):
    """A model that sees no context scores each token on the one before it alone, so the windows that tile the split
    must give the mean over every consecutive pair: a pair dropped or counted twice would move it."""
    class Bigram(torch.nn.Module):
        block_size = 8

        def __init__(self):
            super().__init__()
            self.logits = torch.nn.Embedding(10, 10)

        def forward(self, ids):
            return self.logits(ids)

    monkeypatch.setattr(bpe, "EVAL_WINDOWS", 3)  # 4 batches: 3 windows, 3, the last full one, the 3-token rest
    torch.manual_seed(0)
    model, tokens = Bigram(), np.random.default_rng(0).integers(0, 10, 8 * 7 + 4).astype(np.uint16)
    ids = torch.from_numpy(tokens.astype(np.int64))
    expected = torch.nn.functional.cross_entropy(model(ids[:-1]), ids[1:]).item()
    assert bpe.val_loss(model, tokens) == pytest.approx(expected, rel=1e-6)


@pytest.mark.slow
def test_the_tokenizer_benchmark_reports_bits_per_character_of_the_same_val_text(tmp_path):
    """A smoke run of `make bench`'s tokenizer benchmark: characters and a BPE of 300 tokens on a made-up text."""
    corpus = tmp_path / "text.txt"
    corpus.write_text(tiny_text(20_000))
    result = bpe.compare(tmp_path / "work", corpus, steps=16, bpe_vocabs=(300,), probe_steps=3)
    char, learnt = result["rows"]
    assert (char["tokenizer"], learnt["tokenizer"], char["steps"]) == ("char", "bpe 300", 16)
    assert char["val_chars"] == learnt["val_chars"] == 2_000  # the text's last 10%, whichever the tokens
    assert char["val_tokens"] == 2_000 and 2 < 2_000 / learnt["val_tokens"] == learnt["chars_per_token"]
    for row in result["rows"]:
        assert row["val_bits_per_char"] == pytest.approx(
            row["val_nats_per_token"] * row["val_tokens"] / row["val_chars"] / math.log(2))
        assert 0 < row["val_bits_per_char"] < 10 and row["steps"] > 0 and row["seconds"] > 0
    # the same model but for its embedding (tied to the output layer): a row of n_embd weights per token
    assert learnt["parameters"] - char["parameters"] == (learnt["vocab"] - char["vocab"]) * 128
    assert learnt["vocab"] == 300


@pytest.mark.slow
def test_the_memory_benchmark_measures_generate_and_a_chunk_on_each_corpus(tmp_path):
    result = gpt.memory(tmp_path, threads=1, sizes=(1, 2))
    assert sorted(result) == [1, 2]
    rows = gpt.memory_figures(result)
    assert [row["figure"] for row in rows] == ["peak RSS of a chunk stage, 2 MB corpus",
                                               "peak RSS of generate, 2 MB corpus"]
    # in MB: a stage that imported torch holds over 100 MB, generate (numpy, pyarrow) over 10; in KB, ru_maxrss's
    # unit, or in pages, the figures would be far off
    train, generate = rows
    assert train["value"] > 100 and train["baseline"] > 100 and 10 < generate["baseline"] < 2000
    assert not list(tmp_path.iterdir())  # each corpus's folder is removed once measured


@pytest.mark.slow
def test_the_corpus_benchmark_measures_generate_on_each_text_and_deletes_them(tmp_path):
    result = corpus.measure(tmp_path, 0.1, 0.3, files=2)
    rows = corpus.figures(result)
    assert [row["figure"] for row in rows] == [
        "peak RSS of generate, char, 2 files", "peak RSS of generate, char, one file", "peak RSS of generate, bpe, 2 files",
        "seconds per GB of generate, char", "seconds per GB of generate, bpe"]
    assert all(10 < row["value"] < 2000 and 10 < row["baseline"] < 2000 for row in rows[:3])  # MB, not KB or pages
    assert rows[3]["note"].endswith("the same text as one file gives the folder's dataset id: yes")
    assert 0.3e6 <= result["bytes"]["big"] < 0.31e6 and not list(tmp_path.iterdir())


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


@pytest.mark.slow
def test_the_stage_benchmark_times_dvc_repro_of_a_chunk_against_the_plain_loop(tmp_path):
    """The per-step target's figure: `dvc repro -f -s train@c1` (which must run that stage alone) against
    plain_loop.py on the same dataset folder; the epoch rates of both are parsed from their output (or it fails)."""
    row = bench.stage_vs_plain(tmp_path, n_samples=2000, epochs=2, repeats=1)
    assert row["figure"] == "chunk stage vs plain loop" and row["value"] > 0 and row["baseline"] > 0


def test_an_only_run_replaces_its_own_rows_of_bench_json():
    rows = [{"figure": "a", "value": 1}, {"figure": "b", "value": 2}]
    assert bench.replace_rows(rows, [{"figure": "b", "value": 3}, {"figure": "c", "value": 4}]) == [
        {"figure": "a", "value": 1}, {"figure": "b", "value": 3}, {"figure": "c", "value": 4}]


@pytest.mark.slow
def test_the_dvc_add_timer_finds_each_part_it_times(tmp_path):
    """dvc_add.py times DVC's own functions: a rename in DVC must fail here, not zero a figure of `make bench`."""
    env = project_env()
    for command in (["git", "init", "-q"], ["dvc", "init", "-q"], ["dvc", "config", "cache.type", "reflink,copy"]):
        run(command, cwd=tmp_path, env=env)
    (tmp_path / "big.pt").write_bytes(b"checkpoint" * 100_000)
    result = run([sys.executable, str(ROOT / "benchmarks/dvc_add.py"), "big.pt"], cwd=tmp_path, env=env,
                 merge_stderr=False)
    parts = json.loads(result.stdout.splitlines()[-1])
    assert parts.keys() == {"md5", "cache", "relink"} and all(seconds > 0 for seconds in parts.values()), parts
    assert (tmp_path / ".dvc/cache/files/md5").is_dir()


def test_import_times_name_who_imports_each_heavy_package():
    """The imports figures' notes say which of our modules pulls in a package; parsed from -X importtime."""
    stderr = "\n".join([
        "import time: self [us] | cumulative | imported package",
        "import time:       100 |     900000 |     torch",
        "import time:        50 |     950000 |   chunktrain.recipe.splits",
        "import time:        10 |     960000 | chunktrain.data.dataset",
        "import time:     80000 |      80000 | pandas",
    ])
    total, heavy = bench.import_times(stderr)
    assert total == pytest.approx(1.04)
    assert heavy == {"torch": (0.9, "chunktrain.recipe.splits"), "pandas": (0.08, "top level")}


@pytest.mark.slow
def test_the_finetune_benchmark_times_each_step_and_transformers_samples_from_the_export(tmp_path):
    corpus_file = tmp_path / "text.txt"
    corpus_file.write_text(tiny_text(20_000))
    result = finetune.main(["--size", "tiny", "--corpus", str(corpus_file)])
    assert {"generate", "init", "train@c1", "train@c2", "evaluate", "export"} <= result["seconds"].keys()
    assert all(value > 0 for value in result["seconds"].values())
    assert result["megabytes"]["c2.pt"] >= 0 and result["sample"][1:].startswith("ROMEO:")  # a repr, quoted
