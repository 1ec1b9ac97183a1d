"""One step of the checkpoint hand-off in a fresh process, for bench.py: prints its seconds and peak RSS as JSON.

    save PATH         build a ~100M-parameter MLP with Adam state and write it with save_checkpoint
    load PATH         what a chunk stage does with its parent: load, restore model and optimizer, read every byte
    raw PATH BYTES    the baseline: write BYTES raw bytes with fsync, then read them back
    raw-tensors PATH  write the bytes of save's tensors with fsync, from a process that built them as save does

Peak RSS is read from /proc (Linux): VmHWM, reset just before the step, so it covers the step alone.
"""

import json
import os
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import torch

from chunktrain.recipe.checkpoint import MODEL_CONFIG, load_checkpoint, make_checkpoint, save_checkpoint
from chunktrain.recipe.model import build_model, build_optimizer
from chunktrain.recipe.chunk import restore

# 16*10000 + 10000*10000 + 10000 weights and biases: 100.2M parameters, 1.2 GB with Adam's two moments.
CONFIG = {"arch": "mlp", "args": {"hidden": [10_000, 10_000]}, "task": "regression", "inputs": 16, "outputs": 1,
          "optimizer": "adam", "decay_params": "matrices"}
SETTINGS = SimpleNamespace(lr=0.001, weight_decay=0.0, betas=[0.9, 0.999])  # what restore sets on the optimizer
BLOCK = 64 * 2**20  # raw I/O in 64 MiB blocks, as a buffered copy would


def reset_peak_rss() -> None:
    """Make VmHWM start again from the current RSS (Linux: clear_refs mode 5)."""
    Path("/proc/self/clear_refs").write_text("5")


def peak_rss() -> int:
    """VmHWM in bytes."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def trained_state():
    """The ~100M-parameter MLP with Adam's two moments, as a chunk holds it when it saves."""
    torch.manual_seed(0)
    model = build_model(CONFIG)
    optimizer = build_optimizer(model, CONFIG)
    for parameter in model.parameters():
        parameter.grad = torch.zeros_like(parameter)
    optimizer.step()  # creates Adam's exp_avg and exp_avg_sq for every parameter
    model.zero_grad(set_to_none=True)
    return model, optimizer


def save(path: str) -> dict:
    """Seconds and peak RSS of save_checkpoint on a 100M-parameter model with Adam state."""
    model, optimizer = trained_state()
    reset_peak_rss()
    started = time.perf_counter()
    record = {"id": "0" * 64, "chunk": "c1", "parent": "1" * 64, "spec": {}, "dataset": "2" * 64, "code": "3" * 64}
    save_checkpoint(make_checkpoint(model, optimizer, epoch=1, loss=0.0, model_config=CONFIG, lineage=record,
                                    global_step=1, history=[], transform={}), path)
    return {"seconds": time.perf_counter() - started, "peak_rss": peak_rss(),
            "parameters": sum(p.numel() for p in model.parameters())}


def raw_tensors(path: str) -> dict:
    """Seconds to write the same tensors' bytes, no format, with fsync: what a save could cost at best."""
    model, optimizer = trained_state()
    started = time.perf_counter()
    with open(path, "wb") as file:
        for parameter in model.parameters():
            for tensor in (parameter, optimizer.state[parameter]["exp_avg"], optimizer.state[parameter]["exp_avg_sq"]):
                file.write(tensor.detach().numpy().data)
        file.flush()
        os.fsync(file.fileno())
    return {"seconds": time.perf_counter() - started}


def load(path: str) -> dict:
    """Seconds and peak RSS of restoring a parent as a chunk stage does (chunk.restore), every byte read."""
    reset_peak_rss()
    started = time.perf_counter()
    checkpoint = load_checkpoint(path, "rerun the benchmark")
    model, optimizer = restore(checkpoint, checkpoint[MODEL_CONFIG], SETTINGS, torch.device("cpu"))
    # The load is lazy (mmap); read every byte, as the first training step would.
    for parameter in model.parameters():
        parameter.sum(), optimizer.state[parameter]["exp_avg"].sum(), optimizer.state[parameter]["exp_avg_sq"].sum()
    return {"seconds": time.perf_counter() - started, "peak_rss": peak_rss()}


def raw(path: str, size: int) -> dict:
    """Seconds to write `size` bytes with fsync and read them back: the floor for the hand-off."""
    block = os.urandom(BLOCK)
    started = time.perf_counter()
    with open(path, "wb") as file:
        for offset in range(0, size, BLOCK):
            file.write(block[:size - offset])
        file.flush()
        os.fsync(file.fileno())
    written = time.perf_counter()
    with open(path, "rb") as file:
        data = bytearray(size)
        file.readinto(data)
    read = time.perf_counter()
    return {"write_seconds": written - started, "read_seconds": read - written}


if __name__ == "__main__":
    step, path, *rest = sys.argv[1:]
    result = {"save": lambda: save(path), "load": lambda: load(path), "raw": lambda: raw(path, int(rest[0])),
              "raw-tensors": lambda: raw_tensors(path)}[step]()
    print(json.dumps(result))
