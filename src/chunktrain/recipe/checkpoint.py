"""The checkpoint: its keys, an atomic byte-deterministic save, a safe validated load, and its lineage.

Identity by recipe: every checkpoint carries a lineage record whose id is computed from what made it (its
parent's id, its spec, the dataset's id, the code's id, and the platform: device, threads, torch version,
deterministic algorithms), so a consumer recognises a stale or foreign
checkpoint by comparing ids it has already loaded, never by hashing a file. Integrity by the archive's own
CRC-32s: every loader checks each record's bytes against the CRC-32 torch.save wrote beside it, so a file
changed after it was written (in place, even with its size and mtime kept, which DVC does not notice) is
refused, and so is one loaded, edited and saved again (its tensors' sha256, taken on save, no longer matches);
docs/checkpoint.md says what this does not catch.
"""

import hashlib
import json
import sys
import zipfile
from pathlib import Path

import torch
import torch.utils.serialization.config

from chunktrain.recipe.specs import CHUNK_NAME, INIT, ChunkSpec, InitSpec
from chunktrain.recipe.errors import PipelineError, brief
from chunktrain.recipe.files import write_atomically

FORMAT_VERSION = 6  # 6: BEST, DIGEST; 5: CRC-32s checked; 4: any model, two optimizer groups, rounds; 3: LINEAGE

# The keys, defined once. The first four are the PyTorch checkpointing tutorial's.
# Rounds completed in total, across all chunks: a table's epochs, or a text's rounds of train.eval_every steps.
EPOCH = "epoch"
MODEL_STATE = "model_state_dict"
OPTIMIZER_STATE = "optimizer_state_dict"
LOSS = "loss"  # mean training loss of the last epoch; None in the epoch-0 checkpoint
RNG_STATE = "rng_state"  # {"torch": ByteTensor, "cuda": [ByteTensor per device]}
MODEL_CONFIG = "model_config"  # what built model and optimizer: arch, args, task, inputs, outputs, optimizer, ...
# How raw table values become the model's inputs and targets (data/transform.py): feature names, their train-split
# mean and std, the target's mean and std (regression) or class labels (classification); or a text's vocabulary
# (the character of each token id). From init on, unchanged.
TRANSFORM = "transform"
# How it was made: {id, chunk, parent, spec, dataset, code, device, threads, torch, deterministic}; see lineage().
LINEAGE = "lineage"
GLOBAL_STEP = "global_step"  # optimizer steps taken in total, across all chunks
HISTORY = "history"  # one dict per round of the whole lineage: epoch (the round), step, train_loss, val_loss, lr, chunk
# The chunk's own round with the lowest val loss (the earlier on a tie): {EPOCH: the round, MODEL_STATE: its weights},
# what evaluate, predict and sample use; its losses are HISTORY's record of that round. None in init's checkpoint and
# in a snapshot taken before the chunk's first round ended. The keys above stay the last round's, which a child
# continues from.
BEST = "best"
VERSION = "format_version"
# sha256 of every tensor above with where it sits, which save_checkpoint takes: a file loaded, edited and saved again
# (torch.save writes fresh CRC-32s) keeps the old one, and load_checkpoint refuses it.
DIGEST = "sha256"

KEYS = (EPOCH, MODEL_STATE, OPTIMIZER_STATE, LOSS, RNG_STATE, MODEL_CONFIG, TRANSFORM, LINEAGE, GLOBAL_STEP, HISTORY,
        BEST, VERSION)  # what a checkpoint holds; DIGEST is save_checkpoint's to add


class CheckpointError(PipelineError):
    """A checkpoint is missing, unreadable, or not the one the pipeline's specs describe."""

    def __init__(self, path: str | Path, problem: str, stage: str, force: bool = False):
        # force: DVC believes the file is its output (a same-size change with the mtime kept), so only a
        # forced run of the one stage rebuilds it
        command = f"dvc repro {'-f -s ' if force and stage else ''}{stage}".rstrip()
        super().__init__(f"{path} {problem}; run `{command}` to rebuild it")


# The lineage fields that describe the machine, not the recipe: each can change a result's last bits.
PLATFORM = ("device", "threads", "torch", "deterministic")


def lineage(spec: ChunkSpec | InitSpec, parent_id: str | None, dataset_id: str, code_id: str,
            device: torch.device = torch.device("cpu"), threads: int | None = None) -> dict:
    """The lineage record of a checkpoint made by `spec` from the parent of id `parent_id` (None for init), in
    this process, on `device` with `threads` threads per process.

    Training is deterministic on one platform, so the same record means the same bytes: the id is as strong as a
    file hash. The platform (see platform()) is in it, since another one may round differently.
    """
    record = {"chunk": _name(spec), "parent": parent_id, "spec": _recipe(spec), "dataset": dataset_id,
              "code": code_id, **platform(device, threads)}
    return {"id": lineage_id(record), **record}


def platform(device: torch.device, threads: int | None) -> dict:
    """What of this process can change a result's bits: the device (a CPU's vector width, a GPU's model and
    compute capability), torch's threads per process (how sums split), torch's version (its kernels), and
    whether torch's deterministic algorithms are on (a GPU's atomics)."""
    if device.type == "cuda":
        major, minor = torch.cuda.get_device_capability(device)
        name = f"cuda {torch.cuda.get_device_name(device)} (sm_{major}{minor})"
    else:
        name = f"{device.type} ({torch.backends.cpu.get_cpu_capability()})"
    return {"device": name, "threads": threads, "torch": str(torch.__version__),
            "deterministic": torch.are_deterministic_algorithms_enabled()}


def lineage_id(record: dict) -> str:
    """The id of a lineage record: sha256 of everything in it but the id."""
    return hashlib.sha256(json.dumps({k: v for k, v in record.items() if k != "id"}, sort_keys=True).encode()
                          ).hexdigest()


def _name(spec: ChunkSpec | InitSpec) -> str:
    return spec.name if isinstance(spec, ChunkSpec) else INIT


def _recipe(spec: ChunkSpec | InitSpec) -> dict:
    return spec.model_dump(mode="json", by_alias=True)


def code_id(src: Path, *parts: str) -> str:
    """sha256 of the Python files under src/<part> for each part (a file or a package): a stage's code deps."""
    digest = hashlib.sha256()
    for part in parts:
        path = src / part
        for file in sorted(path.rglob("*.py")) if path.is_dir() else [path]:
            digest.update(f"{file.relative_to(src).as_posix()}\0".encode() + file.read_bytes() + b"\0")
    return digest.hexdigest()


def save_checkpoint(checkpoint: dict, path: str | Path) -> None:
    """Write atomically (see files.py): a crash leaves the old file or none, never a partial one."""
    missing = set(KEYS) - checkpoint.keys()
    if missing:
        raise ValueError(f"checkpoint for {path} lacks keys {sorted(missing)}")
    contents = {key: value for key, value in checkpoint.items() if key != DIGEST}

    def write(file) -> None:
        # Saving through a file object, not a path, keeps the temp name out of the archive:
        # the same checkpoint gives the same bytes, so DVC sees an unchanged output.
        # Each record's CRC-32 is on (torch's default): load_checkpoint checks them.
        with torch.utils.serialization.config.patch({"save.compute_crc32": True}):
            torch.save(_canonical({**contents, DIGEST: tensor_digest(contents)}), file)

    write_atomically(path, write)


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


def load_checkpoint(path: str | Path, stage: str = "") -> dict:
    """Load safely (weights_only, onto the CPU); `stage` is what `dvc repro` should rebuild if the file is bad."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(path, "not found", stage)
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as error:
        reason = str(error).strip().splitlines()[0][:120] if str(error).strip() else type(error).__name__
        raise CheckpointError(path, f"is truncated or corrupt ({reason})", stage) from None
    if not isinstance(checkpoint, dict) or checkpoint.get(VERSION) != FORMAT_VERSION:
        found = checkpoint.get(VERSION) if isinstance(checkpoint, dict) else type(checkpoint).__name__
        raise CheckpointError(path, f"is not a format-{FORMAT_VERSION} checkpoint (found {found!r})", stage)
    missing = set(KEYS) - checkpoint.keys()
    if missing:
        raise CheckpointError(path, f"lacks keys {sorted(missing)}", stage)
    if not isinstance(checkpoint[TRANSFORM], dict) or not isinstance(checkpoint[LINEAGE], dict):
        raise CheckpointError(path, "carries no data transform or lineage", stage)
    if checkpoint[BEST] is not None and _best_record(checkpoint) is None:
        raise CheckpointError(path, "names a best round that is not one of its chunk's rounds", stage)
    changed = changed_record(path)
    if not changed and checkpoint.get(DIGEST) != tensor_digest({k: v for k, v in checkpoint.items() if k != DIGEST}):
        changed = "its tensors are not those its sha256 was taken of: loaded, edited and saved again?"
    if changed:
        raise CheckpointError(path, f"was changed after it was written ({changed})",
                              stage or _stage(checkpoint[LINEAGE]), force=True)
    return checkpoint


def tensor_digest(checkpoint: dict) -> str:
    """sha256 of every tensor in the checkpoint with where it sits (0.6 s a GiB here, where saving takes 2.9 s)."""
    hasher = hashlib.sha256()

    def walk(value, where: str) -> None:
        if isinstance(value, torch.Tensor):
            hasher.update(f"{where} {value.dtype} {tuple(value.shape)};".encode())
            hasher.update(value.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy())
        elif isinstance(value, dict):
            for key in sorted(value, key=str):
                walk(value[key], f"{where}/{key}")
        elif isinstance(value, (list, tuple)):
            for index, item in enumerate(value):
                walk(item, f"{where}/{index}")

    walk(checkpoint, "")
    return hasher.hexdigest()


def best_round(checkpoint: dict) -> tuple[dict | None, dict]:
    """The history record and the weights of the round a loaded checkpoint predicts with: its chunk's best round,
    or init's weights (no record)."""
    if checkpoint[BEST] is None:
        return None, checkpoint[MODEL_STATE]
    return _best_record(checkpoint), checkpoint[BEST][MODEL_STATE]


def _best_record(checkpoint: dict) -> dict | None:
    """HISTORY's record of BEST's round if it is a round of the checkpoint's own chunk and BEST holds weights."""
    best, history = checkpoint[BEST], checkpoint[HISTORY]
    if not isinstance(best, dict) or not isinstance(best.get(MODEL_STATE), dict) or not isinstance(history, list):
        return None
    return next((record for record in history if isinstance(record, dict) and record.get("epoch") == best.get(EPOCH)
                 and record.get("chunk") == checkpoint[LINEAGE].get("chunk")), None)


def changed_record(path: Path) -> str | None:
    """Which record of the archive does not match the CRC-32 torch.save wrote beside it, or None if all do.

    Reads every byte once, in slices (the loaded tensors are memory-mapped views of the same pages).
    """
    try:
        with zipfile.ZipFile(path) as archive:
            for record in archive.infolist():
                with archive.open(record) as data:
                    while data.read(1 << 24):
                        pass
    except (zipfile.BadZipFile, EOFError, ValueError) as error:  # "Bad CRC-32 for file 'archive/data/0'"
        return " ".join(str(error).split())[:120] or type(error).__name__
    return None


def _stage(record: dict) -> str:
    """The stage that writes the checkpoint of a lineage record, as `dvc repro` names it; "" if unknown."""
    chunk = record.get("chunk")
    if chunk == INIT:
        return INIT
    return f"train@{chunk}" if isinstance(chunk, str) and CHUNK_NAME.fullmatch(chunk) else ""


def check_lineage(checkpoint: dict, path: str | Path, *, chunk: str, spec: ChunkSpec | InitSpec, dataset_id: str,
                  stage: str) -> None:
    """Refuse a checkpoint that chunk `chunk` did not make from `spec` on this dataset: another chunk, setting,
    seed, model or dataset. One line names the file and the first setting that differs.

    `spec` is the chunk's whole spec, or only the InitSpec (seed and model) that every chunk of the tree shares.
    """
    record = checkpoint[LINEAGE]
    if record.get("chunk") != chunk:
        raise CheckpointError(path, f"was written by chunk {brief(record.get('chunk'))}, not {chunk}", stage)
    saved = record.get("spec") if isinstance(record.get("spec"), dict) else {}
    if isinstance(spec, InitSpec) and chunk != INIT:
        saved, spec_prefix = saved.get("init"), "init."
    else:
        spec_prefix = ""
    difference = next(_differences(saved, _recipe(spec), spec_prefix), None)
    if difference:
        key, was, now = difference
        raise CheckpointError(path, f"does not match params.yaml: {key} is {brief(was)} in the file, {brief(now)}"
                                    " in params.yaml", stage)
    if record.get("dataset") != dataset_id:
        raise CheckpointError(path, "was made from another dataset than data/dataset/ holds now", stage)


def _differences(saved, expected, prefix: str = ""):
    """(dotted key, saved value, expected value) for each leaf where two JSON-like values differ."""
    if isinstance(saved, dict) and isinstance(expected, dict):
        for key in [*expected, *(k for k in saved if k not in expected)]:
            yield from _differences(saved.get(key), expected.get(key), f"{prefix}{key}.")
    elif saved != expected:
        yield prefix.rstrip(".") or "spec", saved, expected


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


def make_checkpoint(model, optimizer, *, epoch: int, loss: float | None, model_config: dict, lineage: dict,
                    global_step: int, history: list[dict], transform: dict, best: dict | None = None) -> dict:
    """Gather everything an exact continuation needs, under the keys above, and the best round's weights."""
    return {
        EPOCH: epoch,
        MODEL_STATE: model.state_dict(),
        OPTIMIZER_STATE: optimizer.state_dict(),
        LOSS: loss,
        RNG_STATE: rng_state(),
        MODEL_CONFIG: model_config,
        TRANSFORM: transform,
        LINEAGE: lineage,
        GLOBAL_STEP: global_step,
        HISTORY: history,
        BEST: best,
        VERSION: FORMAT_VERSION,
    }
