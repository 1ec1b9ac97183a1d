"""SSH and S3 remotes against real servers on 127.0.0.1: OpenSSH's sshd with dvc-ssh, moto's S3 server with dvc-s3."""

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from chunktrain.checkpoint import EPOCH, PARENT_SHA256, load_checkpoint
from chunktrain.testing import Project, project_env, ran, sha256
from servers import (S3_BUCKET, S3_KEY, S3_SECRET, free_port, keygen, require_module, require_sshd, s3_keys,
                     start_moto, start_sshd, stop)

pytestmark = pytest.mark.slow

OUTPUTS = ["data/dataset/train.parquet", "data/dataset/val.parquet", "data/dataset/test.parquet",
           *(f"data/checkpoints/{name}.pt" for name in ("init", "c1", "c2", "c3")),
           "metrics/curves.csv", "metrics/chunks.json"]


@pytest.fixture(scope="module")
def sshd(tmp_path_factory):
    """A real sshd on a free loopback port: (port, the key it accepts)."""
    require_sshd()
    require_module("dvc_ssh", "dvc-ssh")
    process, port, key = start_sshd(tmp_path_factory.mktemp("sshd") / "server")
    yield port, key
    stop(process)


@pytest.fixture(scope="module")
def moto(tmp_path_factory):
    """moto's S3 server on a free loopback port, with bucket S3_BUCKET: its endpoint url."""
    require_module("dvc_s3", "dvc-s3")
    require_module("moto.server", "moto[server]")
    process, endpoint = start_moto(tmp_path_factory.mktemp("moto") / "server")
    yield endpoint
    stop(process)


def use_ssh(project: Project, port: int, key: Path, folder: Path) -> None:
    """The default remote on the ssh server, set for this user only, as the README shows."""
    project.dvc("remote", "modify", "--local", "storage", "url", f"ssh://root@127.0.0.1:{port}{folder}")
    project.dvc("remote", "modify", "--local", "storage", "keyfile", str(key))


def use_s3(project: Project, endpoint: str, prefix: str, secret: str = S3_SECRET) -> None:
    """The default remote on the S3 server, endpoint and credentials set for this user only."""
    for option, value in [("url", f"s3://{S3_BUCKET}/{prefix}"), ("endpointurl", endpoint),
                          ("access_key_id", S3_KEY), ("secret_access_key", secret)]:
        project.dvc("remote", "modify", "--local", "storage", option, value)


@pytest.fixture(scope="module", params=["ssh", "s3"])
def remote(request, tmp_path_factory):
    """For each server: a function that points a project's default remote at a fresh folder there."""
    folder = tmp_path_factory.mktemp(f"{request.param}-remote")
    if request.param == "ssh":
        port, key = request.getfixturevalue("sshd")
        return lambda project: use_ssh(project, port, key, folder / "storage")
    endpoint = request.getfixturevalue("moto")
    return lambda project: use_s3(project, endpoint, folder.name)


def copy_project(source: Project, path: Path) -> Project:
    shutil.copytree(source.path, path, symlinks=True, ignore=shutil.ignore_patterns("tmp"))
    return Project(path)


def clone(origin: Project, path: Path, configure) -> Project:
    """A fresh git clone, as on another machine: no DVC cache, the remote configured as on the origin."""
    origin.run("git", "clone", "-q", str(origin.path), str(path))
    copy = Project(path)
    configure(copy)
    return copy


def test_push_clone_pull_and_continue_training(remote, reproduced, tmp_path):
    origin = copy_project(reproduced[0], tmp_path / "origin")
    remote(origin)

    started = time.monotonic()
    origin.dvc("push", "--run-cache")
    pushed = time.monotonic()
    fresh = clone(origin, tmp_path / "clone", remote)
    fresh.dvc("pull", "--run-cache")
    pulled = time.monotonic()

    assert "Data and pipelines are up to date." in fresh.dvc("status")
    assert ran(fresh.dvc("repro")) == set()
    for path in OUTPUTS:
        assert sha256(fresh.path / path) == sha256(origin.path / path), path

    fresh.edit_params(lambda params: params["train"]["chunks"].update(c4={"from": "c3", "epochs": 1}))
    assert ran(fresh.dvc("repro")) == {"validate", "train@c4", "evaluate"}
    c4 = load_checkpoint(fresh.path / "data/checkpoints/c4.pt", rebuild="-")
    assert c4[PARENT_SHA256] == sha256(origin.path / "data/checkpoints/c3.pt")
    assert c4[EPOCH] == 7
    print(f"push {pushed - started:.1f} s, clone and pull {pulled - pushed:.1f} s,"
          f" status, repro and one appended chunk {time.monotonic() - pulled:.1f} s")


def assert_nothing_lost(project: Project, before: dict) -> None:
    assert "Data and pipelines are up to date." in project.dvc("status")
    assert {path: sha256(project.path / path) for path in OUTPUTS} == before


@pytest.mark.parametrize("failure, message", [
    ("wrong key", "Permission denied for user root on host 127.0.0.1"),
    ("refused", "Connect call failed ('127.0.0.1', {port})"),
])
def test_ssh_failure_gives_dvcs_error_and_loses_nothing(sshd, reproduced, tmp_path, failure, message):
    port, key = sshd
    project = copy_project(reproduced[0], tmp_path / "repo")
    before = {path: sha256(project.path / path) for path in OUTPUTS}
    if failure == "wrong key":
        key = keygen(tmp_path / "wrong_key")  # a key the server does not know
    else:
        port = free_port()  # nothing listens there
    use_ssh(project, port, key, tmp_path / "storage")

    started = time.monotonic()
    result = project.run("dvc", "push", "--run-cache", check=False)

    print(f"{failure}: exit {result.returncode} after {time.monotonic() - started:.1f} s:\n{result.stdout}")
    assert result.returncode != 0
    assert "ERROR:" in result.stdout
    assert message.format(port=port) in result.stdout
    assert_nothing_lost(project, before)


def test_an_interrupted_s3_push_completes_on_the_next_one(moto, reproduced, tmp_path):
    origin = copy_project(reproduced[0], tmp_path / "origin")
    use_s3(origin, moto, "interrupted")

    # One upload at a time, killed (with its whole process group) as soon as the first file lands.
    push = subprocess.Popen(["dvc", "push", "--run-cache", "--jobs", "1"], cwd=origin.path, env=project_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    while not s3_keys(moto, "interrupted/") and push.poll() is None:
        time.sleep(0.02)
    assert push.poll() is None, "the push finished before it could be interrupted"
    os.killpg(push.pid, signal.SIGKILL)
    push.wait()
    partial = s3_keys(moto, "interrupted/")

    origin.dvc("push", "--run-cache")
    complete = s3_keys(moto, "interrupted/")
    fresh = clone(origin, tmp_path / "clone", lambda project: use_s3(project, moto, "interrupted"))
    fresh.dvc("pull", "--run-cache")

    print(f"killed after {len(partial)} of {len(complete)} remote files")
    assert 0 < len(partial) < len(complete)
    for path in OUTPUTS:
        assert sha256(fresh.path / path) == sha256(origin.path / path), path
    assert "Data and pipelines are up to date." in fresh.dvc("status")
    assert ran(fresh.dvc("repro")) == set()
