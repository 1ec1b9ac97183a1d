"""The model architectures, by the name model.arch gives: one function each, registered in ARCHITECTURES.

An architecture is a function (n_features, n_outputs, hidden) -> nn.Module that maps a float32 batch
(rows, n_features) of standardized features to (rows, n_outputs): the regression target (standardized),
or one logit per class. It must build the same module from the same arguments and draw its initial weights
from torch's global generator alone, so that the seed decides them. Everything it is called with is stored
in the checkpoint's model_config, which is how a checkpoint rebuilds its model.
"""

from collections.abc import Callable

from torch import nn


def mlp(n_features: int, n_outputs: int, hidden: list[int]) -> nn.Sequential:
    """Linear layers of the given widths with ReLU between them; no hidden layers is a linear model."""
    widths = [n_features, *hidden, n_outputs]
    layers: list[nn.Module] = []
    for n_in, n_out in zip(widths, widths[1:]):
        layers += [nn.Linear(n_in, n_out), nn.ReLU()]
    return nn.Sequential(*layers[:-1])


ARCHITECTURES: dict[str, Callable[..., nn.Module]] = {
    "mlp": mlp,
}
