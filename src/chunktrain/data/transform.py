"""The transform from a raw table to the model's inputs and targets, fitted on the train split alone.

A plain dict of lists and numbers (JSON in data/dataset/dataset.json, a checkpoint key after init), so it
travels with the model and anyone can apply it: features[i] is standardized as (value - feature_mean[i]) /
feature_std[i] in float64; a regression target likewise with target_mean and target_std; a classification
target becomes the index of its label in `labels` (sorted). Standard deviations are population ones (ddof 0).
A value more than MAX_STANDARDIZED standard deviations from the train split's mean is refused, in any split, and so
is a train value so far out that the column's other values all standardize to one float32.
"""

import numpy as np

from chunktrain.recipe.errors import PipelineError, brief

# Standard deviations from the train mean beyond which a value is refused: far past any real outlier (a train
# split's own values lie within sqrt(rows)), so a typo or a unit error, whose square would swamp every loss.
MAX_STANDARDIZED = 1e6


MAX_TARGET_STD = 1e100  # a regression target's; its MSE in the target's units must stay a finite float


def mean_std(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Column means and population stds that cannot overflow, whatever the finite values: computed on the values
    scaled by a power of two near each column's largest magnitude, which changes no rounding."""
    _, exponent = np.frexp(np.abs(x).max(axis=0))
    scale = np.ldexp(1.0, exponent)
    unit = x / scale
    return unit.mean(axis=0) * scale, unit.std(axis=0) * scale


def fit_transform(x: np.ndarray, y: np.ndarray, features: list[str], target: str, task: str, where,
                  rows: np.ndarray) -> dict:
    """The statistics and labels of the train split (x float64 (rows, features), y the raw target; the table's
    rows `rows`)."""
    mean, std = mean_std(x)
    constant = [(name, value) for name, value, spread in zip(features, x[0], std) if not spread > 0]
    if len(constant) == 1:
        (name, value), = constant
        raise PipelineError(f"{where}: column {brief(name)} is constant in the train split (every value {value:g});"
                            f" it cannot be standardized: leave it out with data.exclude: [{name}]")
    if constant:  # all of them at once, so that one run tells the user the whole list
        names = [name for name, _ in constant]
        raise PipelineError(f"{where}: {len(names)} columns are constant in the train split; they cannot be"
                            f" standardized: leave them out with data.exclude: [{', '.join(names)}]")
    check_spread(x, mean, std, features, where, rows)
    transform = {"task": task, "features": list(features), "feature_mean": mean.tolist(),
                 "feature_std": std.tolist(), "target": target, "target_mean": None, "target_std": None,
                 "labels": None}
    if task == "regression":
        target_mean, target_std = mean_std(y.astype(np.float64))
        if not target_std > 0:
            raise PipelineError(f"{where}: target column {brief(target)} is constant in the train split (every"
                                f" value {y[0]:g}); there is nothing to learn")
        if target_std > MAX_TARGET_STD:  # its MSE is reported in the target's units: std squared, and more
            raise PipelineError(f"{where}: target column {brief(target)} spreads too far to report an MSE in its"
                                f" units (std {target_std:.3g}, at most {MAX_TARGET_STD:g}); divide it by a power"
                                " of ten")
        transform.update(target_mean=float(target_mean), target_std=float(target_std))
        check_spread(y.astype(np.float64)[:, None], target_mean, target_std, [target], where, rows)
    else:
        labels = sorted({label.item() if isinstance(label, np.generic) else label for label in y})
        if len(labels) < 2:
            raise PipelineError(f"{where}: target column {brief(target)} has one class ({brief(labels[0])}) in the"
                                " train split; classification needs at least two")
        transform["labels"] = labels
    return transform


def check_spread(values: np.ndarray, mean, std, columns: list[str], where, rows: np.ndarray) -> None:
    """Refuse a train column (values (rows, columns), raw) whose values but its farthest all standardize to one
    float32, the model's input type, though they differ: one value so far out that its distance is the std."""
    z = (values - mean) / std
    far = np.abs(z).argmax(axis=0)  # each column's farthest row, left out of both
    rest, raw = z.astype(np.float32), values.copy()
    rest[far, np.arange(z.shape[1])] = raw[far, np.arange(z.shape[1])] = np.nan
    flat = np.flatnonzero((np.nanmin(rest, axis=0) == np.nanmax(rest, axis=0))
                          & (np.nanmin(raw, axis=0) != np.nanmax(raw, axis=0)))
    if len(flat):
        col = flat[0]
        raise PipelineError(f"{where}: column {brief(columns[col])} row {rows[far[col]]} is so far from the others"
                            " that every other value of the train split standardizes to the same float32 number:"
                            " a typo or a unit error? fix or drop that row")


def standardize_features(transform: dict, x: np.ndarray) -> np.ndarray:
    """Raw feature values (rows, features), float64 -> the model's inputs, float64."""
    return (x - np.asarray(transform["feature_mean"])) / np.asarray(transform["feature_std"])


def standardize_target(transform: dict, y: np.ndarray) -> np.ndarray:
    """A regression's raw targets -> standardized values, float64."""
    return (y.astype(np.float64) - transform["target_mean"]) / transform["target_std"]


def encode_target(transform: dict, y: np.ndarray, where) -> np.ndarray:
    """Raw targets -> float32 standardized values (regression) or int64 class indices (classification)."""
    if transform["labels"] is None:
        return standardize_target(transform, y).astype(np.float32)
    index = {label: i for i, label in enumerate(transform["labels"])}
    unseen = [label for label in dict.fromkeys(y.tolist()) if label not in index]
    if unseen:
        raise PipelineError(f"{where}: class {brief(unseen[0])} of target column {brief(transform['target'])} is"
                            " not in the train split, so the model could never predict it; add rows of it")
    return np.array([index[label] for label in y.tolist()], dtype=np.int64)


def standardize(transform: dict, x: np.ndarray, y: np.ndarray, where,
                rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A split's raw features and targets (the table's rows `rows`) -> the model's inputs (float64) and targets."""
    inputs, targets = standardize_features(transform, x), encode_target(transform, y, where)
    check_standardized(inputs, transform["features"], where, rows)
    if transform["labels"] is None:
        check_standardized(standardize_target(transform, y)[:, None], [transform["target"]], where, rows)
    return inputs, targets


def check_standardized(z: np.ndarray, columns: list[str], where, rows: np.ndarray | None = None) -> None:
    """No standardized value (rows, columns) beyond MAX_STANDARDIZED; `rows` numbers the table's rows of z."""
    far = ~(np.abs(z) <= MAX_STANDARDIZED)
    if far.any():
        row, col = np.argwhere(far)[0]
        table_row = row if rows is None else rows[row]
        raise PipelineError(f"{where}: column {brief(columns[col])} row {table_row} is {abs(z[row, col]):.3g}"
                            f" standard deviations from the train split's mean, over {MAX_STANDARDIZED:g}: a typo or"
                            " a unit error? fix or drop that row")
