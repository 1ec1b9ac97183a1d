"""The checkpoint: its keys, an atomic byte-deterministic save, a safe, validated load; a file's sha256."""

import contextlib
import hashlib
import json
import os
import re
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.utils.serialization.config

from chunktrain.atomic import write_atomically
from chunktrain.errors import PipelineError, brief

FORMAT_VERSION = 2  # 2: TRANSFORM, and model_config's arch, task and n_outputs

# The keys, defined once. The first four are the PyTorch checkpointing tutorial's.
EPOCH = "epoch"  # epochs completed in total, across all chunks: the next epoch trained is EPOCH + 1
MODEL_STATE = "model_state_dict"
OPTIMIZER_STATE = "optimizer_state_dict"
LOSS = "loss"  # mean training loss of the last epoch; None in the epoch-0 checkpoint
RNG_STATE = "rng_state"  # {"torch": ByteTensor, "cuda": [ByteTensor per device]}
MODEL_CONFIG = "model_config"  # what built model and optimizer: arch, task, n_features, n_outputs, hidden, optimizer
# How raw table values become the model's inputs and targets (transform.py): feature names, their train-split
# mean and std, the target's mean and std (regression) or class labels (classification). From init on, unchanged.
TRANSFORM = "transform"
CHUNK = "chunk"  # the name of the chunk that wrote it; "init" for the epoch-0 checkpoint
TRAIN_SETTINGS = "train_settings"  # the chunk's effective epochs, lr, batch_size, weight_decay, schedule, cooldown
PARENT = "parent"  # the name of the checkpoint it continued from; None for init
PARENT_SHA256 = "parent_sha256"  # sha256 of the parent's file, to tell a stale child from a fresh one
GLOBAL_STEP = "global_step"  # optimizer steps taken in total, across all chunks
HISTORY = "history"  # one dict per epoch of the whole lineage: epoch, train_loss, val_loss, lr, chunk
VERSION = "format_version"

KEYS = (EPOCH, MODEL_STATE, OPTIMIZER_STATE, LOSS, RNG_STATE, MODEL_CONFIG, CHUNK, TRAIN_SETTINGS, PARENT,
        PARENT_SHA256, GLOBAL_STEP, HISTORY, TRANSFORM, VERSION)


class CheckpointError(PipelineError):
    """A checkpoint is missing, unreadable, or does not fit what params.yaml asks for."""


def save_checkpoint(checkpoint: dict, path: str | Path, written: Callable[[Path], None] | None = None) -> None:
    """Write atomically (see atomic.py): a crash leaves the old file or none, never a partial one.

    written(path), if given, runs when the bytes are in the temp file and not yet renamed into place.
    """
    missing = set(KEYS) - checkpoint.keys()
    if missing:
        raise ValueError(f"checkpoint for {path} lacks keys {sorted(missing)}")

    def write(file) -> None:
        # Saving through a file object, not a path, keeps the temp name out of the archive:
        # the same checkpoint gives the same bytes, so DVC sees an unchanged output.
        # No CRC-32 of every record: torch.load never checks one, so it was a pass over every byte for nothing.
        with torch.utils.serialization.config.patch({"save.compute_crc32": False}):
            torch.save(_canonical(checkpoint), file)

    write_atomically(path, write, written=written)


def _canonical(obj):
    """A copy whose pickle depends on values alone: equal strings become one object, containers new ones.

    pickle writes an object it has seen as a back-reference, so without this a resumed chunk, whose
    strings partly come from a loaded snapshot, would save the same checkpoint as different bytes.
    """
    if isinstance(obj, str):
        return sys.intern(obj)
    if isinstance(obj, dict):  # state dicts are OrderedDicts carrying _metadata: keep both
        copy = type(obj)((_canonical(key), _canonical(value)) for key, value in obj.items())
        if hasattr(obj, "_metadata"):
            copy._metadata = _canonical(obj._metadata)
        return copy
    if type(obj) in (list, tuple):
        return type(obj)(_canonical(item) for item in obj)
    return obj


def load_checkpoint(path: str | Path, rebuild: str) -> dict:
    """Load safely (weights_only, onto the CPU); `rebuild` says what to run if the file is bad."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path} not found; {rebuild}")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as error:
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise CheckpointError(f"{path} is truncated or corrupt ({reason}); {rebuild}") from None
    if not isinstance(checkpoint, dict) or checkpoint.get(VERSION) != FORMAT_VERSION:
        found = checkpoint.get(VERSION) if isinstance(checkpoint, dict) else type(checkpoint).__name__
        raise CheckpointError(f"{path} is not a format-{FORMAT_VERSION} checkpoint (found {found!r}); {rebuild}")
    missing = set(KEYS) - checkpoint.keys()
    if missing:
        raise CheckpointError(f"{path} lacks keys {sorted(missing)}; {rebuild}")
    return checkpoint


def data_transform(checkpoint: dict, path: str | Path, rebuild: str) -> dict:
    """The checkpoint's TRANSFORM, refused if it has none (a checkpoint not made from init's)."""
    if not isinstance(checkpoint[TRANSFORM], dict):
        raise CheckpointError(f"{path} carries no data transform; {rebuild}")
    return checkpoint[TRANSFORM]


def check_model_config(checkpoint: dict, expected: dict, path: str | Path) -> None:
    """Fail fast when a checkpoint was built for another model than params.yaml describes."""
    saved = checkpoint[MODEL_CONFIG]
    if saved != expected:
        diff = ", ".join(f"{key}: {saved.get(key)!r} in the file, {expected.get(key)!r} now"
                         for key in sorted(saved.keys() | expected.keys()) if saved.get(key) != expected.get(key))
        raise CheckpointError(f"{path} was built for another model config ({diff}); run `dvc repro` to rebuild it")


def check_lineage(checkpoint: dict, path: str | Path, *, chunk: str, parent: str | None, settings: dict | None,
                  model_config: dict, rebuild: str) -> None:
    """Refuse a checkpoint that params.yaml would not have produced: another chunk, parent, settings or model.

    `settings` is params.train.settings(chunk).model_dump() (None for init), `model_config` what
    model.model_config() builds from params.yaml, and `rebuild` the command that fixes it
    ("run `dvc repro train@c2` to rebuild it"). One line names the file and the first setting that differs.
    """
    found = [(CHUNK, "chunk", checkpoint[CHUNK], chunk), (PARENT, "parent", checkpoint[PARENT], parent)]
    if isinstance(checkpoint[TRAIN_SETTINGS], dict) and isinstance(settings, dict):
        found += [(TRAIN_SETTINGS, key, checkpoint[TRAIN_SETTINGS].get(key), value) for key, value in settings.items()]
    else:
        found.append((TRAIN_SETTINGS, "train settings", checkpoint[TRAIN_SETTINGS], settings))
    saved = checkpoint[MODEL_CONFIG] if isinstance(checkpoint[MODEL_CONFIG], dict) else {}
    found += [(MODEL_CONFIG, key, saved.get(key), value) for key, value in model_config.items()]
    for _, name, was, now in found:
        if was != now:
            raise CheckpointError(f"{path} does not match params.yaml: {name} is {brief(was)} in the file,"
                                  f" {brief(now)} in params.yaml; {rebuild}")


def file_sha256(path: str | Path) -> str:
    """sha256 of a file: the recorded one while the file is unchanged since, else read in blocks and recorded."""
    path = Path(path)
    with open(path, "rb") as file:
        opened, stat = time.time_ns(), os.fstat(file.fileno())  # before the read, which a write would void
        recorded = _recorded_sha256(path, stat)
        if recorded:
            return recorded
        sha256 = hashlib.file_digest(file, "sha256").hexdigest()
    if opened - stat.st_ctime_ns > RACY_NS:
        _write_record(path, sha256, stat)
    return sha256


# file_sha256 records each hash it computes beside the file, as `.<name>.sha256` (.dvcignore and .gitignore skip
# it), so that later readers of the unchanged file read none of it: evaluate, and each chunk's hash of the data.
# A record holds while the file's inode, size, mtime and ctime are the recorded ones: a write, rename or
# replacement changes one, and os.utime cannot set a ctime. Hashing while saving would not save the first read:
# when DVC commits a stage's output, it replaces the file with a copy from its cache.
_IDENTITY = {"size": "st_size", "st_ino": "st_ino", "st_dev": "st_dev", "mtime_ns": "st_mtime_ns",
             "ctime_ns": "st_ctime_ns"}
_SHA256 = re.compile("[0-9a-f]{64}")
RACY_NS = 100_000_000  # a file changed this recently could change again within one tick of a coarse ctime clock


def record_path(path: Path) -> Path:
    """Where the sha256 of `path` is recorded."""
    return path.with_name(f".{path.name}.sha256")


def _identity(stat: os.stat_result) -> dict:
    return {key: getattr(stat, field) for key, field in _IDENTITY.items()}


def _write_record(path: Path, sha256: str, stat: os.stat_result) -> None:
    # Not atomic and not fsynced: a lost, torn or stale record only costs the next reader a full read.
    with contextlib.suppress(OSError):  # a folder we may not write into
        record_path(path).write_text(json.dumps({"sha256": sha256, **_identity(stat)}) + "\n")


def _recorded_sha256(path: Path, stat: os.stat_result) -> str | None:
    """The recorded sha256 of `path` if the record is well-formed and `stat` is still what it recorded."""
    try:
        record = json.loads(record_path(path).read_bytes())
    except (OSError, ValueError, RecursionError):  # none, unreadable, or not JSON
        return None
    if not isinstance(record, dict) or not _SHA256.fullmatch(str(record.get("sha256"))):
        return None
    return record["sha256"] if record == {"sha256": record["sha256"], **_identity(stat)} else None


def rng_state() -> dict:
    """Every generator the loop could draw from, as tensors that weights_only loading accepts."""
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def restore_rng_state(state: dict) -> None:
    """Put back what rng_state() captured; CUDA states are restored where CUDA is present."""
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def make_checkpoint(model, optimizer, *, epoch: int, loss: float | None, model_config: dict, chunk: str,
                    train_settings: dict | None, parent: str | None, parent_sha256: str | None, global_step: int,
                    history: list[dict], transform: dict | None = None) -> dict:
    """Gather everything an exact continuation needs, under the keys above."""
    return {
        EPOCH: epoch,
        MODEL_STATE: model.state_dict(),
        OPTIMIZER_STATE: optimizer.state_dict(),
        LOSS: loss,
        RNG_STATE: rng_state(),
        MODEL_CONFIG: model_config,
        CHUNK: chunk,
        TRAIN_SETTINGS: train_settings,
        PARENT: parent,
        PARENT_SHA256: parent_sha256,
        GLOBAL_STEP: global_step,
        HISTORY: history,
        TRANSFORM: transform,
        VERSION: FORMAT_VERSION,
    }
