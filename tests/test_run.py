"""`make run` (src/run.py): `dvc repro`, then each stage's wall time; after Ctrl-C, where the chunk stopped, last."""

import os
import re
import shutil
import signal

import pytest

from chunktrain.testing import ROOT, Project, Started, project_env, wait_for

pytestmark = pytest.mark.slow
MAKE_RUN = ["make", "--no-print-directory", "-o", ".venv/.installed", "run"]


def with_makefile(project: Project) -> Project:
    shutil.copy(ROOT / "Makefile", project.path / "Makefile")
    return project


def stage_times(output: str) -> dict[str, str]:
    """The table after `wall time of each stage that ran:`, by stage."""
    table = output.split("wall time of each stage that ran:\n", 1)[1].splitlines()
    return dict(re.fullmatch(r"  (\S+) +(.+ s)", line).groups() for line in table[:table.index(next(
        line for line in table if line.startswith("  total")))])


def test_make_run_ends_with_the_wall_time_of_each_stage_that_ran(project):
    project = with_makefile(project)
    project.edit_params(lambda p: p["train"]["chunks"]["c3"].update(lr=0.003))
    output = project.run(*MAKE_RUN).stdout
    assert list(stage_times(output)) == ["plan", "train@c3", "evaluate"], output  # in the order they ran
    assert re.search(r"\n  total +\d+\.\d s\n", output), output
    assert output.rstrip().splitlines()[-2].startswith("Path "), output  # then dvc metrics show, as before


@pytest.mark.parametrize("shell", [None, "/bin/sh"], ids=["SHELL unset", "SHELL=/bin/sh"])
def test_ctrl_c_during_make_run_ends_with_where_the_chunk_stopped_and_how_to_resume(project, shell):
    """DVC runs a stage with $SHELL -c, or /bin/sh -c where SHELL is unset (CI, containers); Debian's sh does not exec
    the command, so Ctrl-C kills the shell between DVC and the trainer while the trainer writes its snapshot."""
    project = with_makefile(project)
    env = {key: value for key, value in project_env().items() if key != "SHELL"}
    if shell:
        env["SHELL"] = shell
    project.edit_params(lambda p: p["train"].update(snapshot_every_steps=10) or
                        p["train"]["chunks"]["c2"].update(epochs=10))  # 250 steps: caught mid-chunk
    make = Started(MAKE_RUN, cwd=project.path, env=env)
    try:
        wait_for(lambda: (project.path / ".resume/c2/snapshot.pt").exists() or make.poll() is not None,
                 "c2's first snapshot")
        os.killpg(make.pid, signal.SIGINT)  # what Ctrl-C in a terminal does: the whole process group
        output = make.finish().stdout
    finally:
        make.kill_group()
    *_, ours, makes = output.rstrip().splitlines()
    stopped = re.fullmatch(r"interrupted: train@c2 stopped by SIGINT at step (\d+) of the chunk \(epoch \d+, batch"
                           r" \d+\); its snapshot \.resume/c2/snapshot\.pt is kept and `make run` resumes from it",
                           ours)
    assert stopped, output
    # make's word, not an error (make[1] under `make test`, which sets MAKELEVEL)
    assert re.fullmatch(r"make(\[\d+\])?: \*\*\* \[Makefile:\d+: run\] Interrupt", makes), output
    assert make.returncode == -signal.SIGINT and list(stage_times(output))[-1] == "train@c2"
    assert ("exited with -2" in output) == bool(shell), output  # only sh dies by the signal, above the trainer
    resumed = project.run(*MAKE_RUN).stdout
    assert f"resuming c2 from step {stopped[1]} of the chunk" in resumed
    assert list(stage_times(resumed)) == ["train@c2", "train@c3", "evaluate"]
