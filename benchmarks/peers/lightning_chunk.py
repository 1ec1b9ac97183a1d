"""The Lightning peer: one chunk of training as a Lightning user writes it, resuming the previous chunk's checkpoint.

Run once per chunk, each as its own process, as a long job split into pieces runs: `--epochs 2 --out c1.ckpt`, then
`--epochs 4 --resume c1.ckpt --out c2.ckpt` and so on. The model, optimizer, batch and data are the pipeline's
(plain_loop.py's MLP and Adam on the splits of a dataset folder that stage generate wrote); every epoch ends with a
val loss, as a chunk's round does. Needs `lightning` (benchmarks/requirements.txt).
"""

import argparse
import sys
from pathlib import Path

import lightning
import torch
from torch.nn import functional as F
from torch.utils.data import DataLoader, TensorDataset

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from plain_loop import mlp, read_split  # noqa: E402


class Regression(lightning.LightningModule):
    def __init__(self, n_features: int, hidden: list[int], lr: float):
        super().__init__()
        self.model, self.lr = mlp(n_features, hidden), lr

    def training_step(self, batch, _):
        x, y = batch
        return F.mse_loss(self.model(x), y)

    def validation_step(self, batch, _):
        x, y = batch
        self.log("val_loss", F.mse_loss(self.model(x), y))

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=self.lr)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--dataset", type=Path, required=True, help="a dataset folder of generate's")
    parser.add_argument("--epochs", type=int, required=True, help="epochs in all, this chunk's last")
    parser.add_argument("--resume", type=Path, help="the previous chunk's checkpoint")
    parser.add_argument("--out", type=Path, required=True, help="where this chunk's checkpoint goes")
    parser.add_argument("--hidden", type=int, nargs="*", default=[128, 128])
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--lr", type=float, default=1e-3)
    args = parser.parse_args()
    lightning.seed_everything(0, verbose=False)
    (x, y), (x_val, y_val) = (read_split(args.dataset / f"{name}.parquet") for name in ("train", "val"))
    train = DataLoader(TensorDataset(x, y), batch_size=args.batch_size, shuffle=True)
    val = DataLoader(TensorDataset(x_val, y_val), batch_size=len(y_val))  # one batch, as a chunk's val loss
    trainer = lightning.Trainer(max_epochs=args.epochs, accelerator="cpu", devices=1, logger=False,
                                enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(Regression(x.shape[1], args.hidden, args.lr), train, val, ckpt_path=args.resume)
    trainer.save_checkpoint(args.out)


if __name__ == "__main__":
    main()
