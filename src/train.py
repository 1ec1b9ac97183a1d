"""Stage `train@<chunk>`: restore the parent checkpoint (or a matching snapshot), train, write the chunk's checkpoint."""

import argparse
import math
import sys
import time
from pathlib import Path

import torch
from tqdm import tqdm

import chunktrain
from chunktrain import distributed, resume
from chunktrain.checkpoint import (CHUNK, EPOCH, HISTORY, LOSS, MODEL_STATE, OPTIMIZER_STATE, RNG_STATE,
                                   CheckpointError, check_model_config, load_checkpoint, make_checkpoint,
                                   restore_rng_state, save_checkpoint)
from chunktrain.data import Split, read_split
from chunktrain.errors import PipelineError, run_stage
from chunktrain.faults import crash_point
from chunktrain.metrics import write_json
from chunktrain.model import apply_settings, build_model, build_optimizer, model_config
from chunktrain.params import INIT, load_params
from chunktrain.training import Position, train_epochs

CODE = [Path(__file__), *Path(chunktrain.__file__).parent.glob("*.py")]  # what a snapshot's fingerprint covers


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--chunk", required=True, help="a key of train.chunks")
    parser.add_argument("--parent", type=Path, required=True, help="checkpoint the chunk starts from")
    parser.add_argument("--train", type=Path, required=True)
    parser.add_argument("--val", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True, help="checkpoint to write")
    parser.add_argument("--metrics", required=True, help="JSON file for the chunk's final losses")
    parser.add_argument("--snapshot", type=Path, required=True,
                        help="mid-chunk snapshot file, outside DVC's outputs; deleted on success")
    args = parser.parse_args(argv)

    params = load_params(args.params)
    if args.chunk not in params.train.chunks:
        raise PipelineError(f"chunk {args.chunk!r} is not in train.chunks of {args.params}")
    chunk = params.train.chunks[args.chunk]
    settings = params.train.settings(args.chunk)
    nproc = params.train.processes(args.chunk)
    nproc_key = "train.nproc" if chunk.nproc is None else f"train.chunks.{args.chunk}.nproc"
    train = read_split(args.train)
    distributed.check_nproc(nproc, len(train.y), settings.batch_size, nproc_key)
    if nproc > 1 and not distributed.under_torchrun():
        # dvc.yaml runs plain `python src/train.py`, so `dvc exp run --temp` runs its own code: relaunch it here.
        return distributed.launch(nproc, Path(__file__), sys.argv[1:] if argv is None else argv,
                                  device=params.train.device, name=f"train@{args.chunk}", out=args.out)
    world = distributed.join(nproc, params.train.device, nproc_key)
    say = print if world.rank == 0 else lambda *_: None  # the other ranks print only their errors
    val = read_split(args.val)
    if world.device.type != "cpu":
        train, val = (Split(split.x.to(world.device), split.y.to(world.device)) for split in (train, val))
    config = model_config(train.x.shape[1], params.model.hidden, params.train.optimizer)

    parent_stage = INIT if chunk.parent == INIT else f"train@{chunk.parent}"
    parent = load_checkpoint(args.parent, rebuild=f"run `dvc repro {parent_stage}` to rebuild it")
    if parent[CHUNK] != chunk.parent:
        raise CheckpointError(f"{args.parent} was written by {parent[CHUNK]!r}, but chunk {args.chunk}"
                              f" starts from {chunk.parent!r}; run `dvc repro {parent_stage}` to rebuild it")
    check_model_config(parent, config, args.parent)
    # The process count and device change the floating-point reduction order, hence the result.
    fingerprint = resume.fingerprint(parent=args.parent, data=[args.train, args.val], code=CODE,
                                     params={"seed": params.seed, "model": config, "train": settings.model_dump(),
                                             "nproc": world.size, "device": world.device.type})
    snapshot = resume.load_snapshot(args.snapshot, fingerprint, log=say)
    start = snapshot or parent

    # Built on the meta device and given the start's tensors (memory-mapped, copied on write): no time spent
    # initialising weights that are replaced, and no second copy of them in memory.
    with torch.device("meta"):
        model = build_model(config)
    model.load_state_dict(start[MODEL_STATE], assign=True)
    model.to(world.device)
    optimizer = build_optimizer(model, config)
    optimizer.load_state_dict(start[OPTIMIZER_STATE])
    apply_settings(optimizer, settings.lr, settings.weight_decay)
    restore_rng_state(start[RNG_STATE])

    first_epoch, last_epoch = parent[EPOCH] + 1, parent[EPOCH] + settings.epochs
    steps_per_epoch = math.ceil(len(train.y) / settings.batch_size)
    if snapshot:
        position = resume.resume_position(snapshot, len(parent[HISTORY]))
        say(f"resuming {args.chunk} from step {snapshot[resume.RESUME]['step']} (epoch {position.epoch})")
    else:
        position = Position(epoch=first_epoch)
    position.loss_sum = position.loss_sum.to(world.device)
    say(f"train@{args.chunk}: epochs {first_epoch}..{last_epoch} from {args.parent},"
        f" lr {settings.lr}, batch size {settings.batch_size}" + (f", {world.size} processes" if world.size > 1 else ""))

    def checkpoint_at(position: Position) -> dict:
        history = parent[HISTORY] + [{**record, "chunk": args.chunk} for record in position.history]
        return make_checkpoint(model, optimizer, epoch=position.epoch - 1,
                               loss=history[-1]["train_loss"] if position.history else parent[LOSS],
                               model_config=config, chunk=args.chunk, train_settings=settings.model_dump(),
                               parent=chunk.parent, parent_sha256=fingerprint["parent checkpoint"], history=history)

    schedule = resume.SnapshotSchedule(params.train.snapshot_every_steps, params.train.snapshot_every_seconds)
    done = (position.epoch - first_epoch) * len(train.y) + min(position.batch * settings.batch_size, len(train.y))
    writes = world.rank == 0  # rank 0 alone writes snapshots and the checkpoint
    with resume.StopSignals() as signals, tqdm(total=settings.epochs * len(train.y), initial=done, unit="sample",
                                               unit_scale=True, leave=False, disable=None if writes else True) as bar:
        stop = signals if world.size == 1 else distributed.AgreedStop(signals)
        started = time.perf_counter()

        def on_step(position: Position, batch_len: int) -> None:
            bar.update(batch_len)
            step = (position.epoch - first_epoch) * steps_per_epoch + position.batch  # within this chunk
            crash_point("step")
            if writes and (stop.received or schedule.due(step)):
                taken = time.monotonic()
                resume.save_snapshot(args.snapshot, checkpoint_at(position), position, step, fingerprint)
                schedule.taken(taken)
            if stop.received:
                world.barrier()  # no rank exits before rank 0's snapshot is complete
                if not writes:
                    sys.exit(128 + stop.received)
                raise resume.Interrupted(f"train@{args.chunk} interrupted at step {step} (epoch {position.epoch});"
                                         f" snapshot written to {args.snapshot}: `dvc repro` resumes from it",
                                         stop.received)

        def on_epoch(record: dict) -> None:
            nonlocal started
            rate = len(train.y) / (time.perf_counter() - started)
            if writes:
                bar.write(f"train@{args.chunk} epoch {record['epoch']}: train_loss {record['train_loss']:.5f}"
                          f"  val_loss {record['val_loss']:.5f}  lr {record['lr']:g}  {rate:,.0f} samples/s")
            started = time.perf_counter()

        if world.size == 1:
            train_epochs(model, optimizer, train, val, position, last_epoch=last_epoch,
                         batch_size=settings.batch_size, seed=params.seed, on_step=on_step, on_epoch=on_epoch)
        else:
            distributed.train_epochs(distributed.wrap(model, world), optimizer, train, val, position,
                                     last_epoch=last_epoch, batch_size=settings.batch_size, seed=params.seed,
                                     stop=stop, on_step=on_step, on_epoch=on_epoch)

    if not writes:
        return
    save_checkpoint(checkpoint_at(position), args.out)
    last = position.history[-1]
    write_json(args.metrics, {"epoch": last["epoch"], "train_loss": last["train_loss"], "val_loss": last["val_loss"]})
    resume.clear(args.snapshot)  # last: until every output is written, a rerun can still resume


if __name__ == "__main__":
    run_stage(main)
