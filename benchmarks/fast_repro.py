"""Reproduce a project's pipeline in one process, for the growth benchmark: `python fast_repro.py PROJECT`.

Runs each stage's command in DVC's order by calling the script's main() from the project's own src/, then
`dvc commit`s what they wrote: the state `dvc repro` leaves, without a Python and torch start-up per chunk,
so a 100-chunk project is ready in seconds. The benchmark checks that a `dvc repro` after it runs nothing.
It works for any revision whose stage commands are `python src/<script>.py ...` with a main(argv).
"""

import contextlib
import importlib
import io
import os
import shlex
import subprocess
import sys
from pathlib import Path


def stages_in_order(project: Path) -> list[tuple[str, str]]:
    """(name, command) of every stage of the project's dvc.yaml, each after the stages it depends on; the name as
    DVC addresses it from the project's root (train@c1), as it sets $DVC_STAGE for the command."""
    import networkx
    from dvc.repo import Repo

    with contextlib.chdir(project), Repo(".") as repo:  # DVC addresses a stage relative to the working directory
        graph = repo.index.graph  # edges point from a stage to the stages it depends on
        return [(stage.addressing, stage.cmd) for stage in reversed(list(networkx.topological_sort(graph)))]


def main() -> None:
    project = Path(sys.argv[1]).resolve()
    os.chdir(project)
    sys.path.insert(0, str(project / "src"))
    for name, command in stages_in_order(project):
        os.environ["DVC_STAGE"] = name  # as DVC sets it for a stage's command, which may name it ("$DVC_STAGE")
        python, script, *args = shlex.split(os.path.expandvars(command))
        assert python == "python", command
        with contextlib.redirect_stdout(io.StringIO()):
            importlib.import_module(Path(script).stem).main(args)
    subprocess.run(["dvc", "commit", "--force", "--quiet"], check=True)


if __name__ == "__main__":
    main()
