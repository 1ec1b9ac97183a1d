"""Writing a file atomically: a crash leaves the old file or none, never a partial one; readers see one or the other.

Used for checkpoints, snapshots and metrics files alike. The temp file sits beside the target, its name starts
with a dot and ends in .tmp (which .dvcignore and .gitignore skip) and carries the writer's pid, so that clean-up
of a crashed write never deletes a live writer's file.
"""

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO


def write_atomically(path: str | Path, write: Callable[[IO], None], *, binary: bool = True,
                     written: Callable[[Path], None] | None = None) -> None:
    """Call write(file) on a temp file beside `path`, fsync it and rename it into place.

    written(path), if given, runs when the bytes are in the temp file and not yet renamed into place.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    for stale in stale_temp_files(path):  # left by a process killed mid-write
        stale.unlink(missing_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp")
    os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes it 0600; give it the mode open() would have
    try:
        with os.fdopen(fd, "wb" if binary else "w") as file:
            write(file)
            file.flush()
            if written:
                written(path)
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
