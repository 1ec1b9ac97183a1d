"""The harness's commands cannot hang the suite: each has a timeout, past which its whole process group is killed,
and none is read through a pipe that a process it leaves behind could hold open."""

import os
import signal
import time

import psutil
import pytest

from chunktrain.testing import run, wait_for


def alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def test_a_command_past_its_timeout_is_killed_with_its_children_and_fails_naming_it(tmp_path):
    with pytest.raises(AssertionError, match=r"^sh -c '.*' was killed after its timeout of 1 s; its output until"
                                             r" then:\nstarted\n$"):
        run(["sh", "-c", "sleep 60 & echo $! > child; echo started; sleep 60"], cwd=tmp_path, timeout=1)
    child = int((tmp_path / "child").read_text())
    wait_for(lambda: not alive(child), "the command's child to die of its SIGKILL", timeout=10)


def test_a_process_left_holding_the_output_does_not_keep_the_test_waiting(tmp_path):
    """As DVC's queue workers hold the output of `dvc queue start`: a pipe would be read until they end."""
    started = time.monotonic()
    result = run(["sh", "-c", "sleep 60 & echo $! > left; echo done"], cwd=tmp_path, timeout=30)
    took = time.monotonic() - started
    os.kill(int((tmp_path / "left").read_text()), signal.SIGKILL)
    assert result.stdout == "done\n" and took < 10
