"""The synthetic regression data: a fixed random "teacher" network plus Gaussian noise.

Kept apart from data.py, which reads the splits into tensors, so that stage generate does not
import torch (about 1.7 s) and a training stage does not import pandas (about 0.5 s).
"""

import numpy as np

from chunktrain.columns import TARGET, feature_names
from chunktrain.params import DataParams

TEACHER_HIDDEN = 64  # two tanh layers this wide are hard enough that a small MLP keeps improving on it for many epochs


def generate_table(data: DataParams, seed: int):
    """A pandas DataFrame: features x0.. from N(0, 1), target y from the teacher; same params, same frame."""
    import pandas  # here, not at the top: data.py imports this module, and a training stage needs no pandas

    rng = np.random.default_rng(seed)
    # The teacher is drawn first, so n_samples changes the rows but not the function they sample.
    w1 = rng.standard_normal((data.n_features, TEACHER_HIDDEN)) * 2 / np.sqrt(data.n_features)
    w2 = rng.standard_normal((TEACHER_HIDDEN, TEACHER_HIDDEN)) * 2 / np.sqrt(TEACHER_HIDDEN)
    w3 = rng.standard_normal((TEACHER_HIDDEN, 1)) / np.sqrt(TEACHER_HIDDEN)
    x = rng.standard_normal((data.n_samples, data.n_features))
    y = np.tanh(np.tanh(x @ w1) @ w2) @ w3 + data.noise * rng.standard_normal((data.n_samples, 1))
    frame = pandas.DataFrame(x.astype(np.float32), columns=feature_names(data.n_features))
    frame[TARGET] = y[:, 0].astype(np.float32)
    return frame
