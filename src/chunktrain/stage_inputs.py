"""What a chunk stage depends on instead of params.yaml keys and code files: two small files that stand for them.

DVC parses params.yaml once for every stage with `params:` and records, parses and checks every dep of every
stage in dvc.lock, so chunks that listed their 12 keys and 20 code files made a no-op `dvc repro` cost about
60 ms per chunk (benchmarks/README.md). Instead, stage `validate` writes data/params/<chunk>.yaml, the values of
the keys that chunk reads, and stage `train-code` writes data/code/train.sha256, the sha256 of every file
src/train.py runs. Each changes exactly when what it stands for changes, so the same edits rerun the same chunks.

A chunk checks both against params.yaml and the code before it trains (check_chunk_inputs): run with
`dvc repro -s` after an edit, it would otherwise train on values that its recorded deps do not describe,
and DVC's run cache would keep that result under the old values.
"""

import ast
import hashlib
from pathlib import Path

import yaml

from chunktrain.errors import PipelineError

# What train@<chunk> reads of params.yaml besides its own entry train.chunks.<chunk>: the keys it listed as params.
CHUNK_KEYS = ("seed", "model.task", "model.arch", "model.hidden", "train.optimizer", "train.lr", "train.batch_size",
              "train.weight_decay", "train.nproc", "train.device", "train.schedule")


def chunk_params(raw: dict, name: str) -> str:
    """The text of data/params/<name>.yaml: the raw params.yaml values (DVC's loader) of the keys chunk `name` reads.

    Sorted keys, so that only a changed value changes the bytes, as DVC compares params.
    """
    values = {key: _value(raw, key) for key in (*CHUNK_KEYS, f"train.chunks.{name}")}
    return yaml.safe_dump(values, sort_keys=True, default_flow_style=False)


def write_chunk_params(raw: dict, names: list[str], folder: Path) -> None:
    """One data/params/<name>.yaml per chunk, in an emptied folder (a removed chunk leaves no file behind).

    .yaml, not .json: under a chunk name that climbs out of data/params/, its path must never equal the chunk's
    metrics/train/<name>.json, or DVC refuses the graph before stage validate can name the bad chunk.
    """
    folder.mkdir(parents=True, exist_ok=True)
    for stale in folder.glob("*.yaml"):
        stale.unlink()
    for name in names:
        (folder / f"{name}.yaml").write_text(chunk_params(raw, name))


def _value(raw: dict, key: str):
    for part in key.split("."):
        raw = raw.get(part) if isinstance(raw, dict) else None
    return raw


def imported_files(script: Path) -> list[Path]:
    """The script and every module beside it (its folder is on sys.path) that it imports, directly or not."""
    src, found, todo = script.parent, set(), [script]
    while todo:
        path = todo.pop()
        if path in found:
            continue
        found.add(path)
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
            else:
                continue
            for name in names:
                parts = name.split(".")
                # a package import runs its __init__.py too
                candidates = [src.joinpath(*parts[:i], "__init__.py") for i in range(1, len(parts) + 1)]
                candidates.append(src.joinpath(*parts).with_suffix(".py"))
                todo += [candidate for candidate in candidates if candidate.is_file()]
    return sorted(found)


def code_digest(script: Path) -> str:
    """`sha256  path` for each file the script runs, as sha256sum prints them: readable, and diffable.

    Paths are relative to the script's folder, so the same code gives the same digest in any checkout.
    """
    lines = [f"{hashlib.sha256(path.read_bytes()).hexdigest()}  {path.relative_to(script.parent).as_posix()}\n"
             for path in imported_files(script)]
    return "".join(lines)


def check_chunk_inputs(raw: dict, name: str, params_file: Path, digest_file: Path, *, script: Path,
                       code: str) -> None:
    """Refuse to train when the two files the chunk's stage depends on no longer describe params.yaml or the code.

    `raw` is params.yaml as DVC's loader reads it, `code` the code_digest() of the running stage script.
    """
    fix = f"run `dvc repro train@{name}` (without -s), which reruns stages validate and train-code first"
    try:
        params_text, digest_text = params_file.read_text(), digest_file.read_text()
    except OSError as error:
        raise PipelineError(f"cannot read {error.filename}: {error.strerror}; {fix}") from None
    if params_text != chunk_params(raw, name):
        raise PipelineError(f"{params_file} does not match params.yaml; {fix}")
    if digest_text != code:
        raise PipelineError(f"{digest_file} does not match the code of {script}; {fix}")
