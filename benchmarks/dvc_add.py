"""`dvc add PATH` in this process, for bench.py: prints as JSON the seconds spent in each of its three big parts.

    md5       hashing the file
    cache     copying it into .dvc/cache
    relink    replacing the workspace file with a copy from the cache (cache.type copy: a second copy)

The rest of `dvc add` is DVC's start-up and bookkeeping. The three are DVC's own functions (dvc 3.67,
dvc-data 3.18, dvc-objects 5.2): if one is renamed, this fails at once instead of reporting nothing.
"""

import json
import sys
import time

import dvc.output
import dvc_data.hashfile.hash
import dvc_objects.db
from dvc.cli import main as dvc_main

PARTS = {"md5": (dvc_data.hashfile.hash, "file_md5"), "cache": (dvc_objects.db.ObjectDB, "add"),
         "relink": (dvc.output.Output, "_checkout")}


def timed(owner, name: str, spent: dict, part: str) -> None:
    """Replace owner.name by a wrapper that adds its seconds to spent[part]."""
    inner = getattr(owner, name)

    def wrapper(*args, **kwargs):
        started = time.perf_counter()
        try:
            return inner(*args, **kwargs)
        finally:
            spent[part] += time.perf_counter() - started

    setattr(owner, name, wrapper)


if __name__ == "__main__":
    spent = dict.fromkeys(PARTS, 0.0)
    for part, (owner, name) in PARTS.items():
        timed(owner, name, spent, part)
    if dvc_main(["add", "--quiet", *sys.argv[1:]]):
        sys.exit("dvc add failed")
    print(json.dumps(spent))
