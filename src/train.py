"""Stage `train@<chunk>`: restore the parent checkpoint, train the chunk's epochs, write its checkpoint."""

import argparse
import time

import torch
from tqdm import tqdm

from chunktrain.checkpoint import (CHUNK, EPOCH, HISTORY, MODEL_STATE, OPTIMIZER_STATE, RNG_STATE, CheckpointError,
                                   check_model_config, file_sha256, load_checkpoint, make_checkpoint,
                                   restore_rng_state, save_checkpoint)
from chunktrain.data import read_split
from chunktrain.errors import PipelineError, run_stage
from chunktrain.metrics import write_json
from chunktrain.model import apply_settings, build_model, build_optimizer, model_config
from chunktrain.params import INIT, load_params
from chunktrain.training import train_epochs


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--chunk", required=True, help="a key of train.chunks")
    parser.add_argument("--parent", required=True, help="checkpoint the chunk starts from")
    parser.add_argument("--train", required=True)
    parser.add_argument("--val", required=True)
    parser.add_argument("--out", required=True, help="checkpoint to write")
    parser.add_argument("--metrics", required=True, help="JSON file for the chunk's final losses")
    args = parser.parse_args(argv)

    params = load_params(args.params)
    if args.chunk not in params.train.chunks:
        raise PipelineError(f"chunk {args.chunk!r} is not in train.chunks of {args.params}")
    chunk = params.train.chunks[args.chunk]
    settings = params.train.settings(args.chunk)
    train, val = read_split(args.train), read_split(args.val)
    config = model_config(train.x.shape[1], params.model.hidden, params.train.optimizer)

    parent_stage = INIT if chunk.parent == INIT else f"train@{chunk.parent}"
    parent = load_checkpoint(args.parent, rebuild=f"run `dvc repro {parent_stage}` to rebuild it")
    if parent[CHUNK] != chunk.parent:
        raise CheckpointError(f"{args.parent} was written by {parent[CHUNK]!r}, but chunk {args.chunk}"
                              f" starts from {chunk.parent!r}; run `dvc repro {parent_stage}` to rebuild it")
    check_model_config(parent, config, args.parent)
    # Built on the meta device and given the parent's tensors (memory-mapped, copied on write): no time spent
    # initialising weights that are replaced, and no second copy of them in memory.
    with torch.device("meta"):
        model = build_model(config)
    model.load_state_dict(parent[MODEL_STATE], assign=True)
    optimizer = build_optimizer(model, config)
    optimizer.load_state_dict(parent[OPTIMIZER_STATE])
    apply_settings(optimizer, settings.lr, settings.weight_decay)
    restore_rng_state(parent[RNG_STATE])

    first_epoch = parent[EPOCH] + 1
    print(f"train@{args.chunk}: epochs {first_epoch}..{parent[EPOCH] + settings.epochs} from {args.parent},"
          f" lr {settings.lr}, batch size {settings.batch_size}")
    with tqdm(total=settings.epochs * len(train.y), unit="sample", unit_scale=True, leave=False,
              disable=None) as bar:
        started = time.perf_counter()

        def report(record: dict) -> None:
            nonlocal started
            rate = len(train.y) / (time.perf_counter() - started)
            bar.write(f"train@{args.chunk} epoch {record['epoch']}: train_loss {record['train_loss']:.5f}"
                      f"  val_loss {record['val_loss']:.5f}  lr {record['lr']:g}  {rate:,.0f} samples/s")
            started = time.perf_counter()

        history = train_epochs(model, optimizer, train, val, first_epoch=first_epoch, epochs=settings.epochs,
                               batch_size=settings.batch_size, seed=params.seed, on_batch=bar.update,
                               on_epoch=report)
    history = [{**record, "chunk": args.chunk} for record in history]

    save_checkpoint(make_checkpoint(model, optimizer, epoch=history[-1]["epoch"], loss=history[-1]["train_loss"],
                                    model_config=config, chunk=args.chunk, train_settings=settings.model_dump(),
                                    parent=chunk.parent, parent_sha256=file_sha256(args.parent),
                                    history=parent[HISTORY] + history), args.out)
    last = history[-1]
    write_json(args.metrics, {"epoch": last["epoch"], "train_loss": last["train_loss"], "val_loss": last["val_loss"]})


if __name__ == "__main__":
    run_stage(main)
