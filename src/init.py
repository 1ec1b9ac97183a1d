"""Stage `init`: build the seeded model and optimizer and write the epoch-0 checkpoint."""

import argparse

import torch

from chunktrain.checkpoint import make_checkpoint, save_checkpoint
from chunktrain.data import count_features
from chunktrain.errors import run_stage
from chunktrain.model import build_model, build_optimizer, model_config
from chunktrain.params import INIT, load_params


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--train", required=True, help="train split; the model's input size comes from it")
    parser.add_argument("--out", required=True, help="checkpoint to write")
    args = parser.parse_args(argv)
    params = load_params(args.params)
    torch.manual_seed(params.seed)
    config = model_config(count_features(args.train), params.model.hidden, params.train.optimizer)
    model = build_model(config)
    optimizer = build_optimizer(model, config)
    save_checkpoint(make_checkpoint(model, optimizer, epoch=0, loss=None, model_config=config, chunk=INIT,
                                    train_settings=None, parent=None, parent_sha256=None, global_step=0,
                                    history=[]), args.out)
    print(f"init: {args.out}: {sum(p.numel() for p in model.parameters())} parameters, {config}")


if __name__ == "__main__":
    run_stage(main)
