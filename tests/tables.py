"""Small tables the own-data tests write: a classifier's (string labels) and a regressor's, each with a column
that data.features leaves out."""

import numpy as np
import pandas as pd

CLASSES = ["cat", "dog", "eel"]


def classification_table(rows: int = 900, seed: int = 1) -> pd.DataFrame:
    """Three string classes decided by which of three linear scores is largest, with 5% of labels flipped."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(rows, 3)) * [1.0, 10.0, 0.1] + [0.0, 50.0, -3.0]  # scales and offsets far from N(0, 1)
    scores = ((x - [0.0, 50.0, -3.0]) / [1.0, 10.0, 0.1]) @ np.array([[2.0, -1.0, 0.0], [0.0, 1.5, -1.5],
                                                                        [1.0, 0.0, 2.0]])
    label = np.array(CLASSES)[scores.argmax(axis=1)]
    flip = rng.random(rows) < 0.05
    label[flip] = rng.choice(CLASSES, size=flip.sum())
    return pd.DataFrame({"width": x[:, 0], "weight": x[:, 1], "depth": x[:, 2],
                         "note": [f"row{i}" for i in range(rows)], "species": label})


def regression_table(rows: int = 900, seed: int = 2) -> pd.DataFrame:
    """A price in the thousands from three features, an integer one included, plus noise of std 50."""
    rng = np.random.default_rng(seed)
    a, b = rng.normal(size=rows) * 3 + 10, rng.normal(size=rows) * 0.01
    rooms = rng.integers(1, 6, size=rows)
    price = 5000 + 400 * a + 30000 * b + 600 * rooms + 200 * np.sin(a) + rng.normal(size=rows) * 50
    return pd.DataFrame({"id": np.arange(rows) * 7, "area": a, "slope": b, "rooms": rooms, "price": price})


FEATURES = {"classification": ["width", "weight", "depth"], "regression": ["area", "slope", "rooms"]}
TARGET = {"classification": "species", "regression": "price"}


def own_params(params: dict, task: str, source: str) -> dict:
    params["data"] = {"source": source, "target": TARGET[task], "features": FEATURES[task], "val_fraction": 0.2,
                      "test_fraction": 0.2}
    params["model"]["task"] = task
    params["train"]["batch_size"] = 32
    return params


def write_table(path, task: str, frame=None):
    frame = (classification_table() if task == "classification" else regression_table()) if frame is None else frame
    path.parent.mkdir(parents=True, exist_ok=True)
    frame.to_csv(path, index=False) if path.suffix == ".csv" else frame.to_parquet(path, index=False)
    return frame
