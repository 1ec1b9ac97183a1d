"""One chunk on two torchrun nodes (c10d rendezvous on 127.0.0.1), each in its own copy of the repo.

Node 0 is `dvc repro`, whose stage starts its torchrun agent itself (PET_NNODES, PET_RDZV_ENDPOINT); node 1 is the
user's own `torchrun --nnodes 2` in another copy, with its own dataset, parent checkpoint and plan.
"""

import shlex
import time

import pytest
import yaml

from chunktrain.recipe import checkpoint as ckpt
from chunktrain.testing import ROOT, Project, Started, project_env, ran, sha256
from servers import free_port

pytestmark = pytest.mark.slow


def chunk_args(chunk: str) -> list[str]:
    """The arguments of src/train.py in stage train@<chunk>, as dvc.yaml has them (DVC sets $DVC_STAGE)."""
    cmd = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]["train"]["do"]["cmd"]
    words = [f"train@{chunk}" if word == "$DVC_STAGE" else word for word in shlex.split(cmd)]
    assert words[:2] == ["python", "src/train.py"], cmd
    return words[2:]


def node0_env(port: int, join_timeout: int = 60) -> dict:
    """What a user exports on node 0 before `dvc repro`: torchrun's own variables."""
    return {"PET_NNODES": "2", "PET_RDZV_ENDPOINT": f"127.0.0.1:{port}", "PET_RDZV_ID": "d2",
            "PET_RDZV_CONF": f"join_timeout={join_timeout}"}


def node1_command(port: int) -> list[str]:
    """The other node's plain shell line, as docs/distributed.md gives it."""
    return ["torchrun", "--nnodes", "2", "--nproc-per-node", "1", "--rdzv-backend", "c10d",
            "--rdzv-endpoint", f"127.0.0.1:{port}", "--rdzv-id", "d2", "src/train.py", *chunk_args("d2")]


@pytest.fixture(scope="module")
def base(reproduced, tmp_path_factory) -> Project:
    """The reproduced tiny pipeline plus d2: c2's twin on 2 processes, planned, not yet trained. One thread per
    process: by default a node's processes share its CPUs, so one node with two would run half the threads of two
    nodes with one, and the checkpoint records the count (its lineage)."""
    project = reproduced[0].copy(tmp_path_factory.mktemp("multinode") / "base")

    def d2(params: dict) -> None:
        params["train"].update(threads=1)
        params["train"]["chunks"].update(d2={"from": "c1", "epochs": 2, "nproc": 2})

    project.edit_params(d2)
    project.dvc("repro", "plan")  # each node's train.py reads data/plan/train/d2.json
    project.commit("d2 on 2 processes")
    return project


@pytest.fixture(scope="module")
def two_nodes(base, tmp_path_factory):
    """d2 trained on one node with 2 processes, and on two nodes with 1 each: (one-node copy, node 0, node 1)."""
    root = tmp_path_factory.mktemp("nodes")
    one, node0, node1 = (base.copy(root / name) for name in ("one-node", "node0", "node1"))
    started = time.monotonic()
    one.dvc("repro", "train@d2")
    print(f"\none node, 2 processes: {time.monotonic() - started:.1f} s")

    port = free_port()
    # Started first, so c10d (which numbers nodes by host name, then pid) makes node 1's process global rank 0.
    other = Started(node1_command(port), cwd=node1.path, env=project_env())
    started = time.monotonic()
    try:
        output = node0.dvc("repro", "train@d2", env=node0_env(port))
        other_node = other.finish(timeout=60)
    finally:
        other.kill_group()  # torchrun's workers too, if the stage failed
    print(f"two nodes, 1 process each: {time.monotonic() - started:.1f} s")
    assert other_node.returncode == 0, other_node.stdout
    return one, node0, node1, output


def test_a_chunk_on_two_nodes_equals_one_node_with_two_processes(two_nodes):
    one, node0, node1, output = two_nodes
    assert ran(output) == {"train@d2"}
    assert "train@d2: epochs 3..4 from data/checkpoints/c1.pt, lr 0.01, batch size 64, 2 processes" in output
    assert ckpt.load_checkpoint(node0.path / "data/checkpoints/d2.pt")[ckpt.LINEAGE]["threads"] == 1
    assert sha256(node0.path / "data/checkpoints/d2.pt") == sha256(one.path / "data/checkpoints/d2.pt")
    assert not (node1.path / "data/checkpoints/d2.pt").exists()  # the stage's node writes, whatever c10d's order


def test_a_node_that_never_comes_fails_the_stage_within_the_join_timeout(base, tmp_path):
    node0 = base.copy(tmp_path / "node0")
    port = free_port()

    started = time.monotonic()
    result = node0.run("dvc", "repro", "train@d2", check=False, env=node0_env(port, join_timeout=5))
    took = time.monotonic() - started

    print(f"\nexit {result.returncode} after {took:.1f} s:\n{result.stdout}")
    assert result.returncode != 0
    assert (f"error: train@d2: 1 other node(s) did not join the rendezvous at 127.0.0.1:{port} within 5 s"
            f" (PET_RDZV_CONF=join_timeout=<s>); the chunk wrote no checkpoint") in result.stdout
    assert "Traceback" not in result.stdout
    assert took < 60
    assert not (node0.path / "data/checkpoints/d2.pt").exists()
