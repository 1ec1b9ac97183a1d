"""What evaluate reports over the whole chunk tree: each chunk's scores, the best chunk, and the curves of every
branch (metrics/curves.csv, the data of dvc.yaml's loss and lr charts)."""

from chunktrain.recipe.checkpoint import TRANSFORM, best_round
from chunktrain.recipe.splits import is_text


def chunk_scores(checkpoint: dict, losses: dict[str, float], path) -> dict:
    """A chunk's line in metrics/chunks.json: its best round (the weights evaluate scores) and how it scores.

    The test metrics are the task's: test_mse and test_mae, or test_cross_entropy and test_accuracy (none
    for a text, which has no test split).
    """
    best = best_round(checkpoint)[0]
    epoch = {} if is_text(checkpoint[TRANSFORM]) else {"epoch": best["epoch"]}  # a text counts steps alone
    return {**epoch, "step": best["step"], "train_loss": best["train_loss"], "val_loss": best["val_loss"],
            **{f"test_{metric}": value for metric, value in losses.items()}, "checkpoint": str(path)}


def best_chunk(scores: dict[str, dict]) -> str:
    """The chunk whose best round has the lowest val_loss; on a tie, the one with fewer steps.

    Chosen on the validation split only: the test split stays an unbiased estimate of the chosen checkpoint.
    """
    return min(scores, key=lambda name: (scores[name]["val_loss"], scores[name]["step"]))


CURVE_COLUMNS = ["branch", "chunk", "step", "epoch", "train_loss", "val_loss", "lr"]  # of metrics/curves.csv


def tree_curves(leaves: list[str], histories: dict[str, list[dict]]) -> list[dict]:
    """One row per branch and round: the whole lineage of every branch, for one chart of the tree.

    A branch is named after its last chunk (a leaf); branches repeat the rounds they share, so each is one line.
    """
    return [{"branch": leaf, "chunk": record["chunk"], "step": record["step"], "epoch": record["epoch"],
             "train_loss": record["train_loss"], "val_loss": record["val_loss"], "lr": record["lr"]}
            for leaf in leaves for record in histories[leaf]]
