"""Real servers on 127.0.0.1 for the remote tests: Debian's OpenSSH sshd and moto's standalone S3 server.

Each one is started in its own process group and stopped with it, so nothing outlives the test that started it;
and killed by the kernel if the test process dies first (die_with_parent), so not even a crashed test worker leaves one.
"""

import ctypes
import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from chunktrain.testing import run

HOST = "127.0.0.1"
SSHD = "/usr/sbin/sshd"  # Debian's openssh-server; .ci/run installs it when missing
S3_BUCKET = "chunktrain"
S3_KEY, S3_SECRET = "test-key", "test-secret"  # moto accepts any credentials
PR_SET_PDEATHSIG = 1  # <sys/prctl.h>
_prctl = ctypes.CDLL(None, use_errno=True).prctl  # looked up here: a child between fork and exec should only call it


def die_with_parent() -> None:
    """Popen's preexec_fn for a server: the kernel SIGKILLs it when the test process that started it dies, even by
    SIGKILL or a crash that skips every teardown (Linux's PR_SET_PDEATHSIG; it survives the exec)."""
    _prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def wait_for_port(port: int, process: subprocess.Popen, log: Path, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited {process.returncode} before listening:\n{log.read_text()}")
        with socket.socket() as sock:
            if sock.connect_ex((HOST, port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"server not listening on {HOST}:{port} after {timeout} s:\n{log.read_text()}")


def stop(process: subprocess.Popen) -> None:
    """SIGTERM the server's process group (sshd forks one child per connection), SIGKILL it if it lingers."""
    for sig, wait in ((signal.SIGTERM, 10), (signal.SIGKILL, 10)):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            break
        try:
            process.wait(wait)
            break
        except subprocess.TimeoutExpired:
            continue


def keygen(path: Path) -> Path:
    run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], timeout=60)
    return path


def require_sshd() -> None:
    if not os.path.exists(SSHD) or not shutil.which("ssh-keygen"):
        pytest.skip(f"needs Debian's openssh-server ({SSHD}) and ssh-keygen: apt-get install openssh-server")
    if os.geteuid() != 0:
        pytest.skip("sshd must run as root to log a user in (the tests start it with a throw-away config and key)")


def require_module(module: str, package: str) -> None:
    if importlib.util.find_spec(module) is None:
        pytest.skip(f"needs the Python package {package}: `make test` installs it from requirements-test.txt")


def start_sshd(folder: Path) -> tuple[subprocess.Popen, int, Path]:
    """sshd -D on a free loopback port, logging in the current user with a fresh key: (process, port, key)."""
    folder.mkdir(parents=True)
    key = keygen(folder / "client_key")
    (folder / "authorized_keys").write_text((folder / "client_key.pub").read_text())
    port = free_port()
    config = folder / "sshd_config"
    config.write_text(f"""\
ListenAddress {HOST}
Port {port}
HostKey {keygen(folder / "host_key")}
AuthorizedKeysFile {folder / "authorized_keys"}
PidFile none
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin prohibit-password
UsePAM no
StrictModes no
Subsystem sftp internal-sftp
""")
    Path("/run/sshd").mkdir(mode=0o755, parents=True, exist_ok=True)  # sshd's privilege separation dir
    log = folder / "sshd.log"
    process = subprocess.Popen([SSHD, "-D", "-e", "-f", str(config)], stdout=subprocess.DEVNULL,
                               stderr=open(log, "w"), start_new_session=True, preexec_fn=die_with_parent)
    try:
        wait_for_port(port, process, log)
    except BaseException:
        stop(process)
        raise
    return process, port, key


def start_moto(folder: Path) -> tuple[subprocess.Popen, str]:
    """moto's standalone server on a free loopback port, with an empty bucket: (process, endpoint url)."""
    folder.mkdir(parents=True)
    port = free_port()
    log = folder / "moto.log"
    process = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", HOST, "-p", str(port)],
                               stdout=open(log, "w"), stderr=subprocess.STDOUT, start_new_session=True,
                               preexec_fn=die_with_parent)
    endpoint = f"http://{HOST}:{port}"
    try:
        wait_for_port(port, process, log)
        s3_client(endpoint).create_bucket(Bucket=S3_BUCKET)
    except BaseException:
        stop(process)
        raise
    return process, endpoint


def s3_client(endpoint: str):
    import boto3
    return boto3.client("s3", endpoint_url=endpoint, aws_access_key_id=S3_KEY, aws_secret_access_key=S3_SECRET,
                        region_name="us-east-1")

