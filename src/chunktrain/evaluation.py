"""What evaluate reports over the whole chunk tree: each chunk's scores and the best chunk (the curves:
core/curves.py)."""

from chunktrain.core.checkpoint import EPOCH, GLOBAL_STEP, HISTORY, TRANSFORM
from chunktrain.core.splits import is_text


def chunk_scores(checkpoint: dict, losses: dict[str, float], path) -> dict:
    """A chunk's line in metrics/chunks.json: where its checkpoint stands and how it scores.

    The test metrics are the task's: test_mse and test_mae, or test_cross_entropy and test_accuracy (none
    for a text, which has no test split).
    """
    last = checkpoint[HISTORY][-1]  # the round that produced this checkpoint's weights
    epoch = {} if is_text(checkpoint[TRANSFORM]) else {"epoch": checkpoint[EPOCH]}  # a text counts steps alone
    return {**epoch, "step": checkpoint[GLOBAL_STEP], "train_loss": last["train_loss"],
            "val_loss": last["val_loss"],
            **{f"test_{metric}": value for metric, value in losses.items()}, "checkpoint": str(path)}


def best_chunk(scores: dict[str, dict]) -> str:
    """The chunk whose checkpoint has the lowest val_loss; on a tie, the one with fewer steps.

    Chosen on the validation split only: the test split stays an unbiased estimate of the chosen checkpoint.
    """
    return min(scores, key=lambda name: (scores[name]["val_loss"], scores[name]["step"]))
