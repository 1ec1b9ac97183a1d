"""What evaluate reports over the whole chunk tree: each chunk's scores, the best chunk, one curve table."""

from chunktrain.params import TrainParams


def best_chunk(scores: dict[str, dict]) -> str:
    """The chunk whose checkpoint has the lowest val_loss; on a tie, the one with fewer epochs.

    Chosen on the validation split only: the test split stays an unbiased estimate of the chosen checkpoint.
    """
    return min(scores, key=lambda name: (scores[name]["val_loss"], scores[name]["epoch"]))


def tree_curves(train: TrainParams, histories: dict[str, list[dict]]) -> list[dict]:
    """One row per branch and global epoch: the whole lineage of every branch, for one chart of the tree.

    A branch is named after its last chunk; branches repeat the epochs they share, so each is one line.
    """
    return [{"branch": leaf, "chunk": record["chunk"], "epoch": record["epoch"],
             "train_loss": record["train_loss"], "val_loss": record["val_loss"], "lr": record["lr"]}
            for leaf in train.leaves() for record in histories[leaf]]
