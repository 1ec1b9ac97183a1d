"""A real SLURM on 127.0.0.1 for the SLURM tests: Debian's munged, slurmctld and slurmd, as one node.

Everything (munge's key and socket, SLURM's state, spool, logs and pid files) lives in a temp folder, the ports
are free ones chosen here, and stop() cancels every job and stops every daemon, so nothing outlives the suite.
"""

import contextlib
import os
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest

from chunktrain.testing import run
from servers import HOST, die_with_parent, free_port, stop, wait_for_port

DAEMONS = {"munged": "/usr/sbin/munged", "slurmctld": "/usr/sbin/slurmctld", "slurmd": "/usr/sbin/slurmd"}
COMMANDS = ("sbatch", "srun", "squeue", "scancel", "scontrol", "sinfo")
PARTITION = "debug"
SHORT = "short"  # a partition whose time limit is one minute
NODE = "node1"


@dataclass
class Cluster:
    folder: Path
    conf: Path  # slurm.conf: SLURM_CONF for the commands
    processes: list[subprocess.Popen]
    started: float  # time.time() before the first daemon: slurmstepds created after it are this cluster's

    @property
    def env(self) -> dict:
        return {"SLURM_CONF": str(self.conf)}

    def run(self, *command: str) -> str:
        """A SLURM command's output (it fails the test if the command fails or takes over a minute)."""
        return run(command, env={**os.environ, **self.env}, timeout=60).stdout

    def jobs(self) -> list[str]:
        """The ids of the jobs in the queue (pending or running)."""
        return self.run("squeue", "-h", "-o", "%i").split()


def require_slurm() -> None:
    missing = [path for path in DAEMONS.values() if not os.path.exists(path)]
    missing += [name for name in COMMANDS if not shutil.which(name)]
    if missing:
        pytest.skip(f"needs Debian's slurm-wlm and munge ({', '.join(missing)} missing):"
                    " apt-get install slurm-wlm munge")
    if os.geteuid() != 0:
        pytest.skip("slurmd must run as root to start jobs (the tests start it with a throw-away config)")


def start_cluster(folder: Path) -> Cluster:
    """munged, slurmctld and slurmd on free loopback ports, one partition of one node with this machine's CPUs."""
    folder.mkdir(parents=True, mode=0o700)
    for name in ("munge", "state", "spool", "log", "run"):
        (folder / name).mkdir(mode=0o700)
    key = folder / "munge/munge.key"
    key.write_bytes(os.urandom(1024))
    key.chmod(0o600)
    socket_path = folder / "munge/munge.socket"
    ctld_port, slurmd_port = free_port(), free_port()
    conf = folder / "slurm.conf"
    conf.write_text(f"""\
ClusterName=chunktrain-test
SlurmctldHost={socket.gethostname()}({HOST})
SlurmctldPort={ctld_port}
SlurmdPort={slurmd_port}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={socket_path}
StateSaveLocation={folder / "state"}
SlurmdSpoolDir={folder / "spool"}
SlurmctldPidFile={folder / "run/slurmctld.pid"}
SlurmdPidFile={folder / "run/slurmd.pid"}
SlurmctldLogFile={folder / "log/slurmctld.log"}
SlurmdLogFile={folder / "log/slurmd.log"}
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
MpiDefault=none
ReturnToService=2
KillWait=10
MinJobAge=600
NodeName={NODE} NodeAddr={HOST} NodeHostname={socket.gethostname()} CPUs={os.cpu_count()} State=UNKNOWN
PartitionName={PARTITION} Nodes={NODE} Default=YES MaxTime=INFINITE State=UP
PartitionName={SHORT} Nodes={NODE} MaxTime=1 State=UP
""")
    cluster = Cluster(folder, conf, [], time.time())
    try:
        _start(cluster, "munged", ["-F", "--force", f"--key-file={key}", f"--socket={socket_path}",
                                   f"--pid-file={folder / 'run/munged.pid'}", f"--seed-file={folder / 'munge/seed'}",
                                   f"--log-file={folder / 'log/munged.log'}"])
        _wait(lambda: socket_path.exists(), "munged's socket", cluster)
        _start(cluster, "slurmctld", ["-D", "-i", "-f", str(conf)])
        wait_for_port(ctld_port, cluster.processes[-1], folder / "log/slurmctld.log")
        _start(cluster, "slurmd", ["-D", "-N", NODE, "-f", str(conf)])
        _wait(lambda: "idle" in cluster.run("sinfo", "-h", "-N", "-o", "%t"), f"node {NODE} idle", cluster)
    except BaseException:
        stop_cluster(cluster)
        raise
    return cluster


def _start(cluster: Cluster, name: str, args: list[str]) -> None:
    log = open(cluster.folder / f"log/{name}.out", "w")
    cluster.processes.append(subprocess.Popen([DAEMONS[name], *args], stdout=log, stderr=subprocess.STDOUT,
                                              env={**os.environ, **cluster.env}, start_new_session=True,
                                              preexec_fn=die_with_parent))


def _wait(condition, what: str, cluster: Cluster, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        dead = [p.args[0] for p in cluster.processes if p.poll() is not None]
        if dead or time.monotonic() > deadline:
            logs = "\n".join(f"--- {path.name}\n{path.read_text()[-2000:]}"
                             for path in sorted((cluster.folder / "log").iterdir()))
            raise RuntimeError(f"no {what} after {timeout} s ({', '.join(dead) or 'no daemon'} exited):\n{logs}")
        time.sleep(0.1)


def stop_cluster(cluster: Cluster) -> None:
    """Cancel every job, wait for their processes to end, then stop slurmd, slurmctld and munged (whatever failed)."""
    try:
        if len(cluster.processes) == 3 and all(p.poll() is None for p in cluster.processes):
            run(["scancel", "--full", "--user=root"], env={**os.environ, **cluster.env}, check=False, timeout=60)
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and _steps(cluster):
                time.sleep(0.2)
    finally:
        for process in reversed(cluster.processes):
            stop(process)
        for step in _steps(cluster):  # a job step that outlived its slurmd: its own session, so killpg missed it
            with contextlib.suppress(psutil.NoSuchProcess):
                step.kill()


def _steps(cluster: Cluster) -> list[psutil.Process]:
    """This cluster's slurmstepd processes and their children (the jobs' processes)."""
    found = []
    for process in psutil.process_iter(["name", "create_time"]):
        if process.info["name"] == "slurmstepd" and process.info["create_time"] >= cluster.started - 1:
            try:
                found += [process, *process.children(recursive=True)]
            except psutil.NoSuchProcess:
                pass
    return found
