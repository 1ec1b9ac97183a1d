"""Files the stages write: atomically (a crash leaves the old file or none, never a partial one), JSON and CSV.

Atomic writes serve checkpoints, snapshots and metrics files alike. The temp file sits beside the target, its name starts
with a dot and ends in .tmp (which .dvcignore and .gitignore skip) and carries the writer's pid, so that clean-up
of a crashed write never deletes a live writer's file.
"""

import csv
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO

from chunktrain.recipe.errors import PipelineError
from chunktrain.recipe.faults import crash_point


class WriteError(PipelineError, OSError):
    """A file could not be written: a full disk, a read-only file system, a file where its folder should be.

    A PipelineError, so a stage says it in one line; an OSError, so a caller for whom the file is optional (a
    snapshot) can catch it as one.
    """

    def __init__(self, path: Path, error: OSError):
        super().__init__(error.errno, error.strerror, error.filename)
        where = Path(error.filename or path)
        ours = where == path or where.name.startswith(f".{path.name}.")  # the file or its temp file
        self.message = f"cannot write {path}: {error.strerror or error}" + ("" if ours else f" ({where})")

    def __str__(self) -> str:
        return self.message


def write_atomically(path: str | Path, write: Callable[[IO], None], *, binary: bool = True) -> None:
    """Call write(file) on a temp file beside `path`, fsync it and rename it into place.

    Any OSError (a full disk, a read-only folder) leaves the old file and raises WriteError.
    """
    path = Path(path)
    try:
        _write_atomically(path, write, binary)
    except OSError as error:
        raise WriteError(path, error) from None


def _write_atomically(path: Path, write: Callable[[IO], None], binary: bool) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    for stale in stale_temp_files(path):  # left by a process killed mid-write
        stale.unlink(missing_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp")
    os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes it 0600; give it the mode open() would have
    try:
        with os.fdopen(fd, "wb" if binary else "w") as file:
            write(file)
            file.flush()
            crash_point(f"save:{path.name}")
            os.fsync(file.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def stale_temp_files(path: Path) -> list[Path]:
    """Temp files of `path` whose writer (the pid in the name) is no longer running."""
    stale = []
    for tmp in path.parent.glob(f".{path.name}.*.tmp"):
        pid = tmp.name[len(path.name) + 2:].split(".")[0]
        if not pid.isdigit() or not _running(int(pid)):
            stale.append(tmp)
    return stale


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_json(path: str | Path, data: dict) -> None:
    """Write `data` as JSON atomically: a reader (`cat`, `dvc metrics show`) sees the old file or the new one."""
    write_atomically(path, lambda file: file.write(json.dumps(data, indent=2) + "\n"), binary=False)


def write_rows(path: str | Path, rows: list[dict], columns: list[str]) -> None:
    """A CSV with one row per dict, written atomically: a chunk rewrites the charts' data while `dvc plots show` may
    read it."""

    def write(file: IO) -> None:
        writer = csv.DictWriter(file, fieldnames=columns, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)

    write_atomically(path, write, binary=False)
