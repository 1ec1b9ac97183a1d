"""Stage evaluate: it scores only the checkpoints params.yaml would make now; the best chunk, the tree's curves and
the metric files it writes."""

import csv
import json
import math
import shutil

import pyarrow as pa
import pyarrow.parquet
import pytest
import torch

from chunktrain.recipe import checkpoint as ckpt
from chunktrain.recipe.checkpoint import CheckpointError
from chunktrain.recipe.errors import PipelineError
from chunktrain.recipe.files import write_json
from chunktrain.evaluation import STEPS_KEPT, best_chunk, tree_curves
from chunktrain.params import load_params, plan
from chunktrain.recipe import loop
from chunktrain.recipe.specs import ChunkSpec
from chunktrain.testing import ROOT, TINY_PARAMS, TINY_TEXT_PARAMS, Project, new_project, write_params


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> Project:
    """The tiny pipeline trained through c3, once; tests evaluate copies of it."""
    stages = new_project(tmp_path_factory.mktemp("tree"), TINY_PARAMS, git=False)
    stages.generate()
    stages.init()
    for name in ("c1", "c2", "c3"):
        stages.train(name)
    return stages


@pytest.fixture
def trained(tree, tmp_path, params) -> Project:
    """A private copy of the trained tree, with its params to edit."""
    shutil.copytree(tree.root, tmp_path / "tree")
    trained = Project(tmp_path / "tree")
    trained.params = params
    return trained


def test_evaluate_writes_every_chunks_scores_the_best_chunk_and_each_branchs_curve(trained):
    trained.evaluate()
    chunks = json.loads((trained.root / "metrics/chunks.json").read_text())
    assert list(chunks) == ["c1", "c2", "c3"]
    history = ckpt.load_checkpoint(trained.checkpoint("c2"))[ckpt.HISTORY]
    assert (chunks["c2"]["epoch"], chunks["c2"]["step"]) == (4, 100)  # 25 steps an epoch
    assert chunks["c2"]["val_loss"] == history[-1]["val_loss"]  # its best round is its last
    assert set(chunks["c2"]) == {"epoch", "step", "train_loss", "val_loss", "test_mse", "test_mae", "checkpoint",
                                 "platform"}
    lineage = ckpt.load_checkpoint(trained.checkpoint("c2"))[ckpt.LINEAGE]  # where it was trained, in words
    assert chunks["c2"]["platform"] == (f"torch {torch.__version__}, {lineage['device']}, 1 thread per process,"
                                        " deterministic algorithms on")
    best = json.loads((trained.root / "metrics/best.json").read_text())
    scores = {key: value for key, value in chunks[best_chunk(chunks)].items() if key != "platform"}
    assert best == {"chunk": best_chunk(chunks), **scores}  # dvc metrics show's columns: no long platform string
    with open(trained.root / "metrics/curves.csv") as file:
        rows = [row for row in csv.DictReader(file) if row["val_loss"]]  # a round's last step
    lineage = [("c1", "1"), ("c1", "2"), ("c2", "3"), ("c2", "4"), ("c3", "5"), ("c3", "6")]
    assert [(row["branch"], row["chunk"], row["epoch"]) for row in rows] == [("c3", *epoch) for epoch in lineage]
    assert [row["step"] for row in rows] == [str(25 * epoch) for epoch in range(1, 7)]


@pytest.mark.parametrize("edit, refused", [
    (lambda p: p["train"]["chunks"]["c1"].update(lr=0.02),
     "c1.pt does not match params.yaml: settings.lr is 0.01 in the file, 0.02 in params.yaml;"
     " run `dvc repro train@c1` to rebuild it"),
    (lambda p: p["train"]["chunks"]["c2"].update(epochs=3),
     "c2.pt does not match params.yaml: settings.epochs is 2 in the file, 3 in params.yaml;"
     " run `dvc repro train@c2` to rebuild it"),
    (lambda p: p.update(seed=1),
     "init.pt does not match params.yaml: seed is 0 in the file, 1 in params.yaml; run `dvc repro init` to rebuild it"),
])
def test_evaluate_alone_after_a_params_edit_refuses_the_checkpoint_it_no_longer_describes(trained, params, edit,
                                                                                         refused):
    edit(params)  # as `dvc repro -s evaluate` would see it: the specs new, the checkpoints old
    write_params(trained.params_path, params)
    with pytest.raises(CheckpointError) as raised:
        trained.evaluate()
    assert str(raised.value) == f"data/checkpoints/{refused}"
    assert not (trained.root / "metrics/chunks.json").exists()


def test_evaluate_refuses_a_checkpoint_trained_from_an_older_parent(trained, params):
    params["train"]["chunks"]["c1"]["lr"] = 0.005
    params["train"]["chunks"]["c2"]["lr"] = params["train"]["lr"]  # c2 kept its lr, so its spec is unchanged
    write_params(trained.params_path, params)
    trained.train("c1")  # c2 and c3 are now stale, though their own specs are unchanged
    with pytest.raises(CheckpointError, match=r"c2.pt is stale: it was not trained from the current c1.pt;"
                                              r" run `dvc repro train@c2` to rebuild it"):
        trained.evaluate()


def test_a_checkpoint_with_non_finite_weights_is_not_scored(trained):
    path = trained.checkpoint("c3")
    checkpoint = dict(ckpt.load_checkpoint(path))
    checkpoint[ckpt.BEST] = {**checkpoint[ckpt.BEST], ckpt.MODEL_STATE: {  # the weights evaluate scores
        key: torch.full_like(value, math.nan) for key, value in checkpoint[ckpt.MODEL_STATE].items()}}
    ckpt.save_checkpoint(checkpoint, path)
    with pytest.raises(PipelineError, match=r"c3.pt gives a non-finite test loss \(nan\); its weights are not finite:"
                                            r" run `dvc repro train@c3` to rebuild it"):
        trained.evaluate()
    assert not (trained.root / "metrics/chunks.json").exists()


def test_a_checkpoint_without_usable_weights_is_one_line(trained):
    path = trained.checkpoint("c3")
    checkpoint = dict(ckpt.load_checkpoint(path))
    checkpoint[ckpt.BEST] = {**checkpoint[ckpt.BEST], ckpt.MODEL_STATE: {}}
    ckpt.save_checkpoint(checkpoint, path)
    with pytest.raises(CheckpointError, match=r"c3.pt holds no usable model \(Error\(s\) in loading state_dict .*"
                                              r"Missing key\(s\).*\); run `dvc repro train@c3` to rebuild it"):
        trained.evaluate()
    assert not (trained.root / "metrics/chunks.json").exists()


def test_a_nan_in_the_test_split_is_one_line_and_nothing_is_written(trained):
    path = trained.dataset / "test.parquet"
    table = pa.parquet.read_table(path)
    pa.parquet.write_table(table.set_column(0, "x0", pa.array([math.nan] * table.num_rows, pa.float32())), path)
    with pytest.raises(PipelineError) as raised:
        trained.evaluate()
    assert str(raised.value) == ("data/dataset/test.parquet: column x0 has 200 NaN or infinite value(s), the first in"
                                 " row 0; run `dvc repro generate`")
    assert not any((trained.root / "metrics" / name).exists() for name in ("chunks.json", "best.json", "curves.csv"))


def scores(**val_losses) -> dict[str, dict]:
    return {name: {"step": step, "val_loss": val, "test_mse": 1.0 - val} for name, (step, val) in val_losses.items()}


@pytest.mark.parametrize("val_losses, best", [
    ({"c1": (50, 0.3), "c2": (100, 0.1), "c3": (150, 0.2)}, "c2"),  # the last chunk is not always the best
    ({"c1": (50, 0.1), "c2": (100, 0.1)}, "c1"),  # a tie goes to fewer steps
    ({"c2": (100, 0.1), "c1": (50, 0.1)}, "c1"),  # whatever the order of the chunks
])
def test_best_chunk_has_the_lowest_val_loss(val_losses, best):
    assert best_chunk(scores(**val_losses)) == best


def test_best_chunk_ignores_the_test_split():
    chosen = scores(c1=(50, 0.2), c2=(100, 0.3))
    chosen["c2"]["test_mse"] = 0.0  # best on test, worse on val
    assert best_chunk(chosen) == "c1"


def chunk_specs(tmp_path, params: dict) -> dict[str, ChunkSpec]:
    """Every chunk's spec, as stage plan writes them from `params`."""
    return plan(load_params(write_params(tmp_path / "params.yaml", params)))["evaluate.json"].chunks


def rounds(*chunks: tuple[str, int], per_round: int) -> list[dict]:
    """A branch's history: (chunk, rounds) in lineage order, `per_round` steps a round."""
    names = [name for name, count in chunks for _ in range(count)]
    return [{"epoch": epoch, "step": per_round * epoch, "train_loss": 1.0 / epoch, "val_loss": 2.0 / epoch,
             "lr": None, "chunk": name} for epoch, name in enumerate(names, 1)]


def with_chunks(params: dict, chunks: dict, **train) -> dict:
    return {**params, "train": {**params["train"], **train, "chunks": chunks}}


def test_tree_curves_hold_each_branchs_whole_lineage(tmp_path, params):
    params = with_chunks(params, {"c1": {"from": "init", "epochs": 1}, "c2": {"from": "c1", "epochs": 1},
                                  "c2_slow": {"from": "c1", "epochs": 1, "lr": 0.001}})
    histories = {"c2": rounds(("c1", 1), ("c2", 1), per_round=25),
                 "c2_slow": rounds(("c1", 1), ("c2_slow", 1), per_round=25)}
    rows = [row for row in tree_curves(["c2", "c2_slow"], histories, chunk_specs(tmp_path, params))
            if row["val_loss"] != ""]  # a round's losses, on its last step
    assert [(row["branch"], row["chunk"], row["step"], row["lr"]) for row in rows] == [
        ("c2", "c1", 25, 0.01), ("c2", "c2", 50, 0.01), ("c2_slow", "c1", 25, 0.01), ("c2_slow", "c2_slow", 50, 0.001)]
    assert list(rows[0]) == ["branch", "chunk", "step", "epoch", "train_loss", "val_loss", "lr", "loss"]


def test_the_lr_curve_has_every_steps_lr_a_warmup_rising_and_a_cooldown_down_to_min_lr(tmp_path, params):
    params = with_chunks(params, {"c1": {"from": "init", "epochs": 2},
                                  "c1_cool": {"from": "c1", "epochs": 2, "cooldown": "linear"}},
                         schedule={"warmup": 0.5, "decay": "none", "total": None, "min_lr": 0.0005})
    history = rounds(("c1", 2), ("c1_cool", 2), per_round=25)
    rows = tree_curves(["c1_cool"], {"c1_cool": history}, chunk_specs(tmp_path, params))
    assert [row["step"] for row in rows] == list(range(1, 101))  # every step of a short chunk
    lr = [row["lr"] for row in rows]
    assert lr[:12] == pytest.approx([0.01 * step / 12.5 for step in range(1, 13)])  # half an epoch of 25 steps
    assert lr[12:50] == [0.01] * 38  # the warmup's last step (13) reaches the peak
    falls = [before - after for before, after in zip(lr[50:], lr[51:])]
    assert lr[50] < 0.01 and falls == pytest.approx([falls[0]] * 49) and lr[-1] == 0.0005  # linear, to min_lr
    assert [(row["step"], row["val_loss"]) for row in rows if row["val_loss"] != ""] == [
        (25 * epoch, 2.0 / epoch) for epoch in range(1, 5)]
    assert {row["loss"] for row in rows} == {"MSE in the target's units"}


def test_a_long_chunks_lr_curve_is_a_sample_with_every_rounds_ends_and_the_warmup(tmp_path):
    params = with_chunks(TINY_TEXT_PARAMS, {"c1": {"from": "init", "steps": 2000}}, eval_every=250,
                         schedule={"warmup": 100, "decay": "cosine", "total": 2000, "min_lr": 0.0003})
    rows = tree_curves(["c1"], {"c1": rounds(("c1", 8), per_round=250)}, chunk_specs(tmp_path, params))
    lr = {row["step"]: row["lr"] for row in rows}
    assert len(rows) <= STEPS_KEPT + 2 * 8 + 6  # 2000 steps: the chart stays light
    assert {250 * n + 1 for n in range(8)} | {250 * n for n in range(1, 9)} <= set(lr)  # each round's ends
    warmup = [lr[step] for step in sorted(lr) if step <= 100]
    assert warmup == sorted(warmup) and lr[100] == max(lr.values()) == 0.003  # rising to the peak at step 100
    after = [lr[step] for step in sorted(lr) if step > 100]
    assert after == sorted(after, reverse=True) and after[-1] == pytest.approx(0.0003, abs=1e-8)
    assert {row["loss"] for row in rows} == {"cross-entropy per token (nats)"}


@pytest.mark.parametrize("task, loss", [("regression", "MSE in the target's units"),
                                        ("classification", "cross-entropy (nats)")])
def test_the_curves_name_the_tasks_loss_for_the_charts_y_title(tmp_path, params, task, loss):
    params = {**params, "model": {**params["model"], "task": task}}
    rows = tree_curves(["c3"], {"c3": rounds(("c1", 2), ("c2", 2), ("c3", 2), per_round=25)},
                       chunk_specs(tmp_path, params))
    assert {row["loss"] for row in rows} == {loss}
    template = json.loads((ROOT / ".dvc/plots/loss.json").read_text())
    assert "data('curves')[0].loss" in json.dumps(template["layer"][0]["encoding"]["y"]["axis"]["title"])


def test_the_lr_chart_draws_the_lr_the_loop_set_at_every_step(tmp_path, params, monkeypatch):
    params = with_chunks(params, {"c1": {"from": "init", "epochs": 2}, "c2": {"from": "c1", "epochs": 2},
                                  "c2_cool": {"from": "c1", "epochs": 2, "cooldown": "linear"}},
                         schedule={"warmup": 0.5, "decay": "cosine", "total": 6, "min_lr": 0.001})
    stages = new_project(tmp_path / "repo", params, git=False)
    stages.generate()
    stages.init()
    set_lr, set_lrs = loop.set_lr, []
    monkeypatch.setattr(loop, "set_lr", lambda optimizer, lr: set_lrs.append(lr) or set_lr(optimizer, lr))
    took = {}
    for name in ("c1", "c2", "c2_cool"):
        set_lrs.clear()
        stages.train(name)
        took[name] = list(set_lrs)
    stages.evaluate()
    with open(stages.root / "metrics/curves.csv") as file:
        rows = list(csv.DictReader(file))
    for branch, lineage in {"c2": ["c1", "c2"], "c2_cool": ["c1", "c2_cool"]}.items():
        drawn = [(int(row["step"]), float(row["lr"])) for row in rows if row["branch"] == branch]
        assert drawn == list(enumerate([lr for name in lineage for lr in took[name]], 1))
    assert took["c2_cool"][-1] == 0.001 and took["c1"][0] < took["c1"][12] == 0.01


def test_a_metrics_file_is_replaced_whole_and_leaves_no_temp_file(tmp_path):
    path = tmp_path / "metrics/c1.json"
    write_json(path, {"epoch": 1})
    write_json(path, {"epoch": 2})
    assert json.loads(path.read_text()) == {"epoch": 2}
    assert [p.name for p in path.parent.iterdir()] == ["c1.json"]
    (tmp_path / "plain").touch()
    assert path.stat().st_mode == (tmp_path / "plain").stat().st_mode  # not mkstemp's 0600


def test_a_failed_metrics_write_keeps_the_previous_content(tmp_path):
    path = tmp_path / "c1.json"
    write_json(path, {"epoch": 1})
    with pytest.raises(TypeError):
        write_json(path, {"epoch": object()})  # not serialisable: fails before the rename
    assert json.loads(path.read_text()) == {"epoch": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["c1.json"]
