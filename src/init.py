"""Stage `init`: build the seeded model and optimizer and write the epoch-0 checkpoint, with the data's transform."""

import argparse
import json
from pathlib import Path

import torch

from chunktrain.checkpoint import make_checkpoint, save_checkpoint
from chunktrain.data import count_features
from chunktrain.errors import PipelineError, run_stage
from chunktrain.model import build_model, build_optimizer, params_config
from chunktrain.params import INIT, load_params


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--train", required=True, help="train split; the model's input size comes from it")
    parser.add_argument("--transform", type=Path, required=True, help="the data's transform, which generate wrote")
    parser.add_argument("--out", required=True, help="checkpoint to write")
    args = parser.parse_args(argv)
    params = load_params(args.params)
    transform = read_transform(args.transform, params.model.task)
    torch.manual_seed(params.seed)
    config = params_config(params, count_features(args.train), transform)
    model = build_model(config)
    optimizer = build_optimizer(model, config)
    save_checkpoint(make_checkpoint(model, optimizer, epoch=0, loss=None, model_config=config, chunk=INIT,
                                    train_settings=None, parent=None, parent_sha256=None, global_step=0,
                                    history=[], transform=transform), args.out)
    print(f"init: {args.out}: {sum(p.numel() for p in model.parameters())} parameters, {config}")


def read_transform(path: Path, task: str) -> dict:
    """The transform generate wrote, refused if it is missing or made for another task."""
    try:
        transform = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise PipelineError(f"cannot read {path} ({error}); run `dvc repro generate`") from None
    if not isinstance(transform, dict) or transform.get("task") != task:
        raise PipelineError(f"{path} was not written for model.task {task}; run `dvc repro generate`")
    return transform


if __name__ == "__main__":
    run_stage(main)
