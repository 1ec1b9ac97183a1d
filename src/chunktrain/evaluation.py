"""What evaluate reports over the whole chunk tree: each chunk's scores, the best chunk, one curve table."""

from chunktrain.core.checkpoint import EPOCH, HISTORY


def chunk_scores(checkpoint: dict, losses: dict[str, float], path) -> dict:
    """A chunk's line in metrics/chunks.json: where its checkpoint stands and how it scores.

    The test metrics are the task's: test_mse and test_mae, or test_cross_entropy and test_accuracy.
    """
    last = checkpoint[HISTORY][-1]  # the epoch that produced this checkpoint's weights
    return {"epoch": checkpoint[EPOCH], "train_loss": last["train_loss"], "val_loss": last["val_loss"],
            **{f"test_{metric}": value for metric, value in losses.items()}, "checkpoint": str(path)}


def best_chunk(scores: dict[str, dict]) -> str:
    """The chunk whose checkpoint has the lowest val_loss; on a tie, the one with fewer epochs.

    Chosen on the validation split only: the test split stays an unbiased estimate of the chosen checkpoint.
    """
    return min(scores, key=lambda name: (scores[name]["val_loss"], scores[name]["epoch"]))


def tree_curves(leaves: list[str], histories: dict[str, list[dict]]) -> list[dict]:
    """One row per branch and global epoch: the whole lineage of every branch, for one chart of the tree.

    A branch is named after its last chunk (a leaf); branches repeat the epochs they share, so each is one line.
    """
    return [{"branch": leaf, "chunk": record["chunk"], "epoch": record["epoch"],
             "train_loss": record["train_loss"], "val_loss": record["val_loss"], "lr": record["lr"]}
            for leaf in leaves for record in histories[leaf]]
