"""The best chunk and the tree's curve table, as evaluate reports them."""

import pytest

from chunktrain.params import TrainParams
from chunktrain.summary import best_chunk, tree_curves


def scores(**val_losses) -> dict[str, dict]:
    return {name: {"epoch": epoch, "val_loss": val, "test_mse": 1.0 - val}
            for name, (epoch, val) in val_losses.items()}


@pytest.mark.parametrize("val_losses, best", [
    ({"c1": (2, 0.3), "c2": (4, 0.1), "c3": (6, 0.2)}, "c2"),  # the last chunk is not always the best
    ({"c1": (2, 0.1), "c2": (4, 0.1)}, "c1"),  # a tie goes to fewer epochs
])
def test_best_chunk_has_the_lowest_val_loss(val_losses, best):
    assert best_chunk(scores(**val_losses)) == best


def test_best_chunk_ignores_the_test_split():
    chosen = scores(c1=(2, 0.2), c2=(4, 0.3))
    chosen["c2"]["test_mse"] = 0.0  # best on test, worse on val
    assert best_chunk(chosen) == "c1"


def test_tree_curves_hold_each_branchs_whole_lineage():
    train = TrainParams.model_validate({
        "optimizer": "adam", "lr": 0.01, "batch_size": 8, "weight_decay": 0.0, "snapshot_every_steps": None,
        "snapshot_every_seconds": None,
        "chunks": {"c1": {"from": "init", "epochs": 1}, "c2": {"from": "c1", "epochs": 1},
                   "c2_slow": {"from": "c1", "epochs": 1, "lr": 0.001}}})

    def record(epoch, chunk, lr):
        return {"epoch": epoch, "train_loss": 1.0 / epoch, "val_loss": 2.0 / epoch, "lr": lr, "chunk": chunk}

    c1 = [record(1, "c1", 0.01)]
    histories = {"c1": c1, "c2": c1 + [record(2, "c2", 0.01)], "c2_slow": c1 + [record(2, "c2_slow", 0.001)]}
    rows = tree_curves(train, histories)
    assert [(row["branch"], row["chunk"], row["epoch"], row["lr"]) for row in rows] == [
        ("c2", "c1", 1, 0.01), ("c2", "c2", 2, 0.01), ("c2_slow", "c1", 1, 0.01), ("c2_slow", "c2_slow", 2, 0.001)]
    assert list(rows[0]) == ["branch", "chunk", "epoch", "train_loss", "val_loss", "lr"]
