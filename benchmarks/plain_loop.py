"""The baseline: a plain PyTorch training loop of the tutorial's kind, on the pipeline's data and model.

Run as a script it does what the whole pipeline does in one process: make the data, train, evaluate. With
--dataset it trains instead on the splits of a dataset folder that stage generate wrote, as a chunk does.
"""

import argparse
import json
import time
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F


def teacher_data(n_samples: int, n_features: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows of the same shape and kind as the pipeline's: N(0, 1) features, a tanh teacher's noisy output."""
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(n_samples, n_features, generator=generator)
    w1 = torch.randn(n_features, 64, generator=generator) * 2 / n_features ** 0.5
    w2 = torch.randn(64, 64, generator=generator) * 2 / 8
    w3 = torch.randn(64, 1, generator=generator) / 8
    y = torch.tanh(torch.tanh(x @ w1) @ w2) @ w3 + 0.1 * torch.randn(n_samples, 1, generator=generator)
    return x, y


def read_split(path: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """Features and target of a split generate wrote (columns x0.. and y); not through pandas, as a chunk reads it."""
    import pyarrow.parquet  # here: the in-memory baseline of the whole pipeline reads no file

    table = pyarrow.parquet.ParquetFile(path).read()
    columns = {name: torch.from_dlpack(table[name].combine_chunks()) for name in table.column_names}
    y = columns.pop("y")
    return torch.stack(list(columns.values()), dim=1).float(), y[:, None].float()


def mlp(n_features: int, hidden: list[int]) -> nn.Sequential:
    """The same architecture as chunktrain.recipe.model.build_model, written out by hand."""
    widths = [n_features, *hidden, 1]
    layers: list[nn.Module] = []
    for n_in, n_out in zip(widths, widths[1:]):
        layers += [nn.Linear(n_in, n_out), nn.ReLU()]
    return nn.Sequential(*layers[:-1])


def train(model: nn.Module, x: torch.Tensor, y: torch.Tensor, x_val: torch.Tensor, y_val: torch.Tensor, *,
          epochs: int, batch_size: int, lr: float) -> list[float]:
    """Shuffle, slice batches, step Adam; evaluate on val after every epoch. Returns samples/s per epoch."""
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    rates = []
    for _ in range(epochs):
        started = time.perf_counter()
        order = torch.randperm(len(y))
        xs, ys = x[order], y[order]
        model.train()
        for start in range(0, len(y), batch_size):
            optimizer.zero_grad()
            loss = F.mse_loss(model(xs[start:start + batch_size]), ys[start:start + batch_size])
            loss.backward()
            optimizer.step()
        model.eval()
        with torch.no_grad():
            F.mse_loss(model(x_val), y_val).item()
        rates.append(len(y) / (time.perf_counter() - started))
    return rates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    data = parser.add_mutually_exclusive_group(required=True)
    data.add_argument("--n-samples", type=int, help="rows to make before the split, as data.n_samples")
    data.add_argument("--dataset", type=Path, help="a dataset folder of generate's: train on its train split")
    parser.add_argument("--n-features", type=int, default=16)
    parser.add_argument("--hidden", type=int, nargs="*", default=[128, 128])
    parser.add_argument("--epochs", type=int, required=True)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--lr", type=float, default=1e-3)
    args = parser.parse_args()
    torch.manual_seed(0)
    if args.dataset:
        (x, y), (x_val, y_val) = (read_split(args.dataset / f"{name}.parquet") for name in ("train", "val"))
    else:
        x, y = teacher_data(args.n_samples, args.n_features)
        n_train = int(args.n_samples * 0.8)  # the pipeline's 0.1 val and 0.1 test fractions
        n_val = (args.n_samples - n_train) // 2
        x, y, x_val, y_val = x[:n_train], y[:n_train], x[n_train:n_train + n_val], y[n_train:n_train + n_val]
    rates = train(mlp(x.shape[1], args.hidden), x, y, x_val, y_val, epochs=args.epochs, batch_size=args.batch_size,
                  lr=args.lr)
    print(json.dumps({"samples_per_s": rates}))


if __name__ == "__main__":
    main()
