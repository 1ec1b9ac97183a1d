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
from chunktrain.evaluation import tree_curves
from chunktrain.evaluation import best_chunk
from chunktrain.testing import TINY_PARAMS, Project, new_project, write_params


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
    assert set(chunks["c2"]) == {"epoch", "step", "train_loss", "val_loss", "test_mse", "test_mae", "checkpoint"}
    best = json.loads((trained.root / "metrics/best.json").read_text())
    assert best == {"chunk": best_chunk(chunks), **chunks[best_chunk(chunks)]}
    with open(trained.root / "metrics/curves.csv") as file:
        rows = list(csv.DictReader(file))
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


def test_tree_curves_hold_each_branchs_whole_lineage():
    def record(epoch, chunk, lr):
        return {"epoch": epoch, "step": 25 * epoch, "train_loss": 1.0 / epoch, "val_loss": 2.0 / epoch, "lr": lr,
                "chunk": chunk}

    c1 = [record(1, "c1", 0.01)]
    histories = {"c1": c1, "c2": c1 + [record(2, "c2", 0.01)], "c2_slow": c1 + [record(2, "c2_slow", 0.001)]}
    rows = tree_curves(["c2", "c2_slow"], histories)
    assert [(row["branch"], row["chunk"], row["step"], row["lr"]) for row in rows] == [
        ("c2", "c1", 25, 0.01), ("c2", "c2", 50, 0.01), ("c2_slow", "c1", 25, 0.01), ("c2_slow", "c2_slow", 50, 0.001)]
    assert list(rows[0]) == ["branch", "chunk", "step", "epoch", "train_loss", "val_loss", "lr"]


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
