"""Using a trained model: load_model() from any chunk checkpoint, predictions for a table, and a torch.export file.

The Predictor holds the checkpoint's transform, so it takes raw feature values; everything it needs is in
the checkpoint (see recipe/checkpoint.py's MODEL_CONFIG and TRANSFORM), none of it in params.yaml.
"""

import json
from pathlib import Path

import numpy as np
import torch
from torch import nn

from chunktrain.recipe.checkpoint import TRANSFORM, best_round, load_checkpoint
from chunktrain.recipe.model import load_trained
from chunktrain.recipe.splits import is_text
from chunktrain.recipe.errors import PipelineError, brief
from chunktrain.data import tables
from chunktrain.data.transform import check_standardized, standardize_features

EXPORT_INFO = "chunktrain.json"  # the .pt2's extra file: feature names, task, labels


class Predictor(nn.Module):
    """A trained model with its transform inside: raw features in, predictions in the target's units out.

    forward takes float64 (rows, len(features)) in the order of `features`, and returns the regression
    prediction (rows,), or the probability of each class in `labels` (rows, len(labels)), both float64.
    """

    def __init__(self, model: nn.Module, transform: dict, trained: dict | None = None):
        super().__init__()
        self.model = model
        self.trained = trained  # the history record of the round whose weights these are; None for init's
        self.register_buffer("feature_mean", torch.tensor(transform["feature_mean"], dtype=torch.float64))
        self.register_buffer("feature_std", torch.tensor(transform["feature_std"], dtype=torch.float64))
        self.transform = transform
        self.task, self.features, self.labels = transform["task"], transform["features"], transform["labels"]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        output = self.model(((x.double() - self.feature_mean) / self.feature_std).float()).double()
        if self.labels is not None:
            return torch.softmax(output, dim=1)
        return output[:, 0] * self.transform["target_std"] + self.transform["target_mean"]


def load_model(path: str | Path) -> Predictor:
    """The ready model of a chunk (or init) checkpoint: its best round's weights (recipe/checkpoint.py's BEST), eval
    mode, no gradients, transform and labels attached."""
    checkpoint = load_checkpoint(path)
    if is_text(checkpoint[TRANSFORM]):
        raise PipelineError(f"{path} is a language model; sample text from it with src/sample.py")
    predictor = Predictor(load_trained(checkpoint, path), checkpoint[TRANSFORM], best_round(checkpoint)[0])
    return predictor.eval().requires_grad_(False)


@torch.no_grad()
def predict_table(predictor: Predictor, frame, where):
    """The input DataFrame, its rows in order, with a `prediction` column (and `proba_<class>` ones) added.

    A column of those names in the input, a feature value too far out to standardize or a non-finite prediction
    is one line; nothing of the input is overwritten.
    """
    import pandas

    tables.require_columns(frame, predictor.features, where, "feature")
    x = tables.numeric_columns(frame, predictor.features, where)
    check_standardized(standardize_features(predictor.transform, x), predictor.features, where)
    output = predictor(torch.tensor(x)).numpy()
    if predictor.labels is None:
        added = pandas.DataFrame({"prediction": output}, index=frame.index)
    else:
        labels = np.asarray(predictor.labels, dtype=object)[output.argmax(axis=1)]
        if all(isinstance(label, int) for label in predictor.labels):
            labels = labels.astype(np.int64)
        added = pandas.concat([pandas.DataFrame({"prediction": labels}, index=frame.index),
                               pandas.DataFrame(output, columns=[f"proba_{label}" for label in predictor.labels],
                                                index=frame.index)], axis=1)
    taken = [name for name in added.columns if name in frame.columns]
    if taken:
        raise PipelineError(f"{where}: has a column {brief(taken[0])}, which the predictions would overwrite;"
                            " rename it")
    bad = ~np.isfinite(output.reshape(len(output), -1)).all(axis=1)
    if bad.any():
        raise PipelineError(f"{where}: row {int(np.flatnonzero(bad)[0])} gets a non-finite prediction; the"
                            " checkpoint's weights are not finite")
    return pandas.concat([frame, added], axis=1)


def export(predictor: Predictor, path: str | Path) -> None:
    """Write the predictor with torch.export, for any batch size; load it with torch.export.load(path).module()."""
    rows = torch.export.Dim("rows")
    example = torch.zeros(2, len(predictor.features), dtype=torch.float64)
    program = torch.export.export(predictor, (example,), dynamic_shapes={"x": {0: rows}})
    info = {key: predictor.transform[key] for key in ("task", "features", "labels", "target")}
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    torch.export.save(program, path, extra_files={EXPORT_INFO: json.dumps(info)})
