"""The synthetic regression table, the default data source: a fixed random "teacher" network plus Gaussian noise."""

import numpy as np

from chunktrain.data.specs import SyntheticParams

TEACHER_HIDDEN = 64  # two tanh layers this wide are hard enough that a small MLP keeps improving on it for many epochs


def synthetic_table(data: SyntheticParams, seed: int):
    """A pandas DataFrame: features x0.. from N(0, 1), target y from the teacher; same params, same frame."""
    import pandas

    rng = np.random.default_rng(seed)
    # The teacher is drawn first, so n_samples changes the rows but not the function they sample.
    w1 = rng.standard_normal((data.n_features, TEACHER_HIDDEN)) * 2 / np.sqrt(data.n_features)
    w2 = rng.standard_normal((TEACHER_HIDDEN, TEACHER_HIDDEN)) * 2 / np.sqrt(TEACHER_HIDDEN)
    w3 = rng.standard_normal((TEACHER_HIDDEN, 1)) / np.sqrt(TEACHER_HIDDEN)
    x = rng.standard_normal((data.n_samples, data.n_features))
    y = np.tanh(np.tanh(x @ w1) @ w2) @ w3 + data.noise * rng.standard_normal((data.n_samples, 1))
    frame = pandas.DataFrame(x.astype(np.float32), columns=[f"x{i}" for i in range(data.n_features)])
    frame["y"] = y[:, 0].astype(np.float32)
    return frame
