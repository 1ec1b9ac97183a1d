"""SSH and S3 remotes against real servers on 127.0.0.1: OpenSSH's sshd with dvc-ssh, moto's S3 server with dvc-s3.

The same push, clone and pull as tests/test_remote.py's local folder, through each plugin that requirements.txt pins.
"""

import time
from pathlib import Path

import pytest

from chunktrain.testing import Project, ran, sha256
from servers import S3_BUCKET, S3_KEY, S3_SECRET, require_module, require_sshd, start_moto, start_sshd, stop

pytestmark = pytest.mark.slow

OUTPUTS = ["data/dataset/train.parquet", "data/dataset/val.parquet", "data/dataset/test.parquet",
           *(f"data/checkpoints/{name}.pt" for name in ("init", "c1", "c2", "c3")),
           "metrics/curves.csv", "metrics/chunks.json"]


def ssh_remote(tmp_path: Path):
    """A real sshd on a free loopback port; the `dvc remote modify --local` options that reach it."""
    require_sshd()
    require_module("dvc_ssh", "dvc-ssh")
    process, port, key = start_sshd(tmp_path / "sshd")
    return process, {"url": f"ssh://root@127.0.0.1:{port}{tmp_path / 'storage'}", "keyfile": str(key)}


def s3_remote(tmp_path: Path):
    """moto's S3 server on a free loopback port, with bucket S3_BUCKET; the options that reach it."""
    require_module("dvc_s3", "dvc-s3")
    require_module("moto.server", "moto[server]")
    process, endpoint = start_moto(tmp_path / "moto")
    return process, {"url": f"s3://{S3_BUCKET}/storage", "endpointurl": endpoint, "access_key_id": S3_KEY,
                     "secret_access_key": S3_SECRET}


@pytest.mark.parametrize("server", [ssh_remote, s3_remote], ids=["ssh", "s3"])
def test_push_clone_and_pull_through_a_server(server, project, tmp_path):
    process, options = server(tmp_path)
    try:
        def configure(repo: Project) -> None:  # for this user only, in .dvc/config.local, as the docs show
            for option, value in options.items():
                repo.dvc("remote", "modify", "--local", "storage", option, value)

        configure(project)
        started = time.monotonic()
        project.dvc("push", "--run-cache")
        pushed = time.monotonic()
        project.run("git", "clone", "-q", str(project.path), str(tmp_path / "clone"))
        clone = Project(tmp_path / "clone")
        configure(clone)
        clone.dvc("pull", "--run-cache")
        print(f"push {pushed - started:.1f} s, clone and pull {time.monotonic() - pushed:.1f} s")
    finally:
        stop(process)
    assert clone.status() == {}
    assert ran(clone.dvc("repro")) == set()
    for path in OUTPUTS:
        assert sha256(clone.path / path) == sha256(project.path / path), path
