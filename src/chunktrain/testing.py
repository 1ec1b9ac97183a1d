"""For tests and benchmarks: tiny params, and the project in a temp folder, its stages run as dvc.yaml runs them
(in this process, or by `dvc` in a git repo). No stage imports it, so no stage depends on it."""

import contextlib
import hashlib
import importlib
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
import torch
import yaml

from chunktrain.recipe import checkpoint as ckpt

ROOT = Path(__file__).resolve().parents[2]
# Seconds a command a test starts may run before it is killed and the test fails with its output: a tiny pipeline's
# `dvc repro` takes seconds, a SLURM chunk about a minute; under pytest-timeout's 600 s per test, so the message
# names the command. A longer one passes its own.
COMMAND_TIMEOUT = 300.0
PROJECT_FILES = ["dvc.yaml", "params.yaml", "src", "pretrained", ".dvc/config", ".dvc/.gitignore", ".dvc/plots",
                 ".dvcignore", ".gitignore", "metrics/live.csv"]
ALL_STAGES = {"plan", "synthesize", "generate", "init", "train@c1", "train@c2", "train@c3", "evaluate"}

TINY_PARAMS = {
    "seed": 0,
    "synthetic": {"n_samples": 2000, "n_features": 4, "noise": 0.1},
    "data": {"source": "data/raw/synthetic.parquet", "target": "y", "features": None, "val_fraction": 0.1,
             "test_fraction": 0.1},
    "model": {"task": "regression", "arch": "mlp", "args": {"hidden": [16]}},
    "train": {
        "optimizer": "adam",
        "lr": 0.01,
        "batch_size": 64,
        "weight_decay": 0.0,
        "nproc": 1,
        "device": "auto",
        "snapshot_every_steps": None,
        "snapshot_every_seconds": 30,
        "schedule": {"warmup": 0.0, "decay": "none", "total": None, "min_lr": 0.0},
        "chunks": {
            "c1": {"from": "init", "epochs": 2},
            "c2": {"from": "c1", "epochs": 2},
            "c3": {"from": "c2", "epochs": 2},
        },
    },
}

# A language model on a text: a small GPT, chunks in steps, and the knobs the issue of the GPT asks for.
TINY_TEXT_PARAMS = {
    **TINY_PARAMS,
    "data": {"source": "data/text.txt", "val_fraction": 0.1},
    "model": {"task": "language_model", "arch": "gpt",
              "args": {"n_layer": 1, "n_head": 2, "n_embd": 16, "block_size": 16, "dropout": 0.1, "bias": True}},
    "train": {**TINY_PARAMS["train"], "optimizer": "adamw", "lr": 0.003, "batch_size": 4, "weight_decay": 0.1,
              "betas": [0.9, 0.99], "grad_clip": 1.0, "grad_accum": 2, "eval_every": 10, "eval_batches": 2,
              "schedule": {"warmup": 5, "decay": "cosine", "total": 60, "min_lr": 0.0003},
              "chunks": {"c1": {"from": "init", "steps": 20}, "c2": {"from": "c1", "steps": 20}}},
}


def tiny_text(n_chars: int = 20_000, seed: int = 0) -> str:
    """A made-up text of words and lines, the same for the same arguments: a corpus no test has to download."""
    import random

    words = "to be or not that is the question whether tis nobler in mind suffer slings and arrows".split()
    chosen = random.Random(seed)
    lines, size = [], 0
    while size < n_chars:
        line = " ".join(chosen.choice(words) for _ in range(chosen.randint(3, 9))).capitalize() + ".\n"
        lines.append(line)
        size += len(line)
    return "".join(lines)[:n_chars]


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def write_params(path: Path, params: dict) -> Path:
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    return path


def wait_for(condition, what: str, timeout: float = 120.0, poll: float = 0.005) -> None:
    """Wait until condition() is true (an event the code under test emits: a file, a line); fail after timeout."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(poll)


def project_env() -> dict:
    """The environment a user has after `make setup`: this venv first on PATH, so stages find its python."""
    env = dict(os.environ, DVC_NO_ANALYTICS="1", PYTHONUNBUFFERED="1",
               GIT_AUTHOR_NAME="test", GIT_AUTHOR_EMAIL="test@localhost",
               GIT_COMMITTER_NAME="test", GIT_COMMITTER_EMAIL="test@localhost")
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    return env


class Project:
    """The project in a temp folder, driven the way a user drives it: real `dvc` (in a git repo), or a stage run in
    this process exactly as dvc.yaml's command runs it (stage()), for tests that need no DVC."""

    def __init__(self, path: Path):
        self.path = path

    @property
    def root(self) -> Path:
        return self.path

    @property
    def params_path(self) -> Path:
        return self.path / "params.yaml"

    @property
    def dataset(self) -> Path:
        return self.path / "data/dataset"  # the folder generate writes

    def checkpoint(self, name: str) -> Path:
        return self.path / f"data/checkpoints/{name}.pt"

    def spec(self, name: str) -> Path:
        return self.path / f"data/plan/{name}"

    def stage(self, name: str) -> None:
        """Run stage `name` (train@c1, evaluate, ...) in this process: dvc.yaml's command, in the project's folder."""
        words = shlex.split(stage_command(name).replace('"$DVC_STAGE"', shlex.quote(name)))
        assert words[0] == "python" and words[1].startswith("src/"), words
        script = importlib.import_module(Path(words[1]).stem)
        with contextlib.chdir(self.path), _own_environment():  # a stage under torchrun sets variables for its ranks
            script.main(words[2:])

    def plan(self) -> None:
        self.stage("plan")

    def generate(self) -> None:
        """Stages plan, synthesize and generate."""
        for name in ("plan", "synthesize", "generate"):
            self.stage(name)

    def init(self) -> None:
        self.plan()
        self.stage("init")

    def train(self, chunk: str, parent: str | None = None) -> Path:
        """Train `chunk` from its parent in params.yaml (`parent` is only checked against it)."""
        self.plan()
        assert parent in (None, json.loads(self.spec(f"train/{chunk}.json").read_text())["parent"]), parent
        self.stage(f"train@{chunk}")
        return self.checkpoint(chunk)

    def evaluate(self) -> None:
        self.plan()
        self.stage("evaluate")

    def run(self, *command: str, check: bool = True, env: dict | None = None,
            timeout: float = COMMAND_TIMEOUT) -> subprocess.CompletedProcess:
        return run(command, cwd=self.path, env={**project_env(), **(env or {})}, check=check, timeout=timeout)

    def dvc(self, *args: str, check: bool = True, env: dict | None = None,
            timeout: float = COMMAND_TIMEOUT) -> str:
        return self.run("dvc", *args, check=check, env=env, timeout=timeout).stdout

    def repro(self, *args: str, env: dict | None = None) -> set[str]:
        """Run `dvc repro`; the stages whose dvc.lock entry it changed or added, i.e. that it reran (or took from
        the run cache) because a dependency changed."""
        before = self.lock()
        self.dvc("repro", *args, env=env)
        return {name for name, entry in self.lock().items() if before.get(name) != entry}

    def lock(self) -> dict[str, dict]:
        """dvc.lock's entry of each stage: the hashes of the deps, params and outs of its last run."""
        lock = self.path / "dvc.lock"
        return yaml.safe_load(lock.read_text())["stages"] if lock.exists() else {}

    def status(self) -> dict:
        """`dvc status --json`: each stage whose deps or outs changed since its last run, and what changed."""
        return json.loads(self.dvc("status", "--json"))

    def copy(self, path: Path) -> "Project":
        """A copy of the repo at `path`, DVC cache included, to edit without touching this one."""
        shutil.copytree(self.path, path, symlinks=True, ignore=shutil.ignore_patterns("tmp"))
        return Project(path)

    def commit(self, message: str) -> None:
        self.run("git", "add", "-A")
        self.run("git", "commit", "-q", "-m", message)

    def edit_params(self, edit) -> None:
        params = self.params
        edit(params)
        self.params = params

    def append(self, path: Path, text: str) -> None:
        with open(path, "a") as file:
            file.write(text)

    @property
    def params(self) -> dict:
        return yaml.safe_load(self.params_path.read_text())

    @params.setter
    def params(self, value: dict) -> None:
        write_params(self.params_path, value)


class Started(subprocess.Popen):
    """A command started in a session of its own, as a terminal starts a job (Ctrl-C there is
    os.killpg(pid, SIGINT)), its output to a temp file rather than a pipe: a process it leaves behind (DVC's queue
    workers inherit the output of `dvc queue start`) cannot keep the test reading. finish() waits with a timeout."""

    def __init__(self, command, *, cwd=None, env: dict | None = None, merge_stderr: bool = True):
        self._stdout = tempfile.TemporaryFile()
        self._stderr = self._stdout if merge_stderr else tempfile.TemporaryFile()
        super().__init__(command, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=self._stdout,
                         stderr=self._stderr, start_new_session=True)

    def finish(self, timeout: float = COMMAND_TIMEOUT) -> subprocess.CompletedProcess:
        """Wait for the command to end: its exit status and output (stderr in stdout unless started apart). Past
        `timeout` seconds, or interrupted (pytest-timeout, Ctrl-C), its process group is killed, children too."""
        try:
            self.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill_group()
            raise AssertionError(f"{shlex.join(map(str, self.args))} was killed after its timeout of {timeout:g} s;"
                                 f" its output until then:\n{self.output()}") from None
        except BaseException:
            self.kill_group()
            raise
        stderr = None if self._stderr is self._stdout else self._read(self._stderr)
        return subprocess.CompletedProcess(self.args, self.returncode, self.output(), stderr)

    def kill_group(self) -> None:
        """SIGKILL the command's process group (what it started and did not move to a group of its own)."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.pid, signal.SIGKILL)
        self.wait()

    def output(self) -> str:
        """What the command has printed so far (stdout and, unless started apart, stderr)."""
        return self._read(self._stdout)

    @staticmethod
    def _read(file) -> str:
        file.seek(0)
        return file.read().decode(errors="replace")


def run(command, *, cwd=None, env: dict | None = None, check: bool = True, timeout: float = COMMAND_TIMEOUT,
        merge_stderr: bool = True) -> subprocess.CompletedProcess:
    """Run a command to its end (see Started): killed with its process group past `timeout` seconds, failing the
    test with its output so far; with check, a non-zero exit fails the test with its output."""
    result = Started(command, cwd=cwd, env=env, merge_stderr=merge_stderr).finish(timeout)
    if check and result.returncode != 0:
        raise AssertionError(f"{shlex.join(map(str, command))} exited {result.returncode}:\n{result.stdout}"
                             + (f"\n{result.stderr}" if result.stderr else ""))
    return result


# wait4's peak RSS of a child is at least its parent's RSS at the fork (Linux carries the high-water mark through fork
# and exec), and a test or benchmark holds torch and more: the command runs under a bare python, which holds ~10 MB.
LAUNCHER = """import os, sys
pid = os.fork()
if pid == 0:
    os.execvp(sys.argv[1], sys.argv[1:])
_, status, usage = os.wait4(pid, 0)
print(f"peak_rss {usage.ru_maxrss * 1024}")
sys.exit(os.waitstatus_to_exitcode(status))
"""


def measured(command: list[str], *, cwd=None, env: dict | None = None,
             timeout: float = COMMAND_TIMEOUT) -> tuple[float, int, str]:
    """Seconds a command takes from start to end, its peak RSS in bytes, and its output; a failure fails loudly."""
    started = time.perf_counter()
    result = run([sys.executable, "-c", LAUNCHER, *command], cwd=cwd, env=env, timeout=timeout)
    seconds = time.perf_counter() - started
    output, _, peak = result.stdout.rpartition("peak_rss ")
    return seconds, int(peak), output


def stage_command(name: str) -> str:
    """dvc.yaml's command of stage `name`, a foreach stage's (train@<chunk>) from its template."""
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    stage = stages[name.partition("@")[0]]
    return stage.get("do", stage)["cmd"]


def ran(output: str) -> set[str]:
    """Stages that `dvc repro` ran (not those it skipped or restored from the run cache)."""
    return set(re.findall(r"Running stage '([^']+)'", output))


def new_project(path: Path, params: dict, root: Path = ROOT, git: bool = True) -> Project:
    """The project's files from `root` (this checkout, or another revision's files) at `path`, with `params`: a git
    repo for `dvc`, or (git=False) a folder to run stages in with Project.stage."""
    path.mkdir(parents=True, exist_ok=True)
    for name in PROJECT_FILES:
        source, target = root / name, path / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if source.is_dir():
            shutil.copytree(source, target, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(source, target)
    project = Project(path)
    project.params = params
    if git:
        project.run("git", "init", "-q")
        project.commit("project")
    return project


@contextlib.contextmanager
def _own_environment():
    """os.environ as it was, after a stage main() run in this process changed it (as its own process may)."""
    saved = dict(os.environ)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


def chunked_and_whole(stages: Project, params: dict, first: int, second: int) -> tuple[dict, dict]:
    """Train c1 (`first` epochs) then c2 (`second`), and `whole` (both at once) from the same init; load c2, whole."""
    params["train"]["chunks"] = {"c1": {"from": "init", "epochs": first}, "c2": {"from": "c1", "epochs": second},
                                 "whole": {"from": "init", "epochs": first + second}}
    write_params(stages.params_path, params)
    stages.init()
    stages.train("c1", "init")
    chunked = ckpt.load_checkpoint(stages.train("c2", "c1"))
    return chunked, ckpt.load_checkpoint(stages.train("whole", "init"))


def assert_same_state(a: dict, b: dict) -> None:
    for key in a[ckpt.MODEL_STATE]:
        assert torch.equal(a[ckpt.MODEL_STATE][key], b[ckpt.MODEL_STATE][key]), key
    state_a, state_b = a[ckpt.OPTIMIZER_STATE]["state"], b[ckpt.OPTIMIZER_STATE]["state"]
    assert state_a.keys() == state_b.keys()
    for index in state_a:
        for name, tensor in state_a[index].items():
            assert torch.equal(tensor, state_b[index][name]), (index, name)
    assert a[ckpt.OPTIMIZER_STATE]["param_groups"] == b[ckpt.OPTIMIZER_STATE]["param_groups"]
    assert torch.equal(a[ckpt.RNG_STATE]["torch"], b[ckpt.RNG_STATE]["torch"])


def losses(checkpoint: dict) -> list[tuple]:
    return [(r["epoch"], r["step"], r["train_loss"], r["val_loss"], r["lr"]) for r in checkpoint[ckpt.HISTORY]]


def processes_under(path) -> list[psutil.Process]:
    """Processes whose working directory is inside path: the queue's workers and the stages they run."""
    found = []
    for process in psutil.process_iter(["cwd", "cmdline"]):
        cwd = process.info["cwd"]
        if cwd and (cwd == str(path) or cwd.startswith(f"{path}/")):
            found.append(process)
    return found


def stop_queue(project: Project, grace: float = 10.0) -> None:
    """End every process the experiment queue left in the project, found by its working folder: the celery workers
    (and the process holding each), the experiments they run, and those experiments' stages; fail if one survives.
    Signals, not `dvc queue stop`: that asks the workers over DVC's file broker, whose races between two workers
    (a JSONDecodeError in a worker's log; DVC issue 10428) can leave a worker deaf to it and alive for good.
    SIGTERM first (a stage snapshots, a SLURM stage cancels its job), SIGKILL to any left after `grace` seconds."""
    sent: dict[int, int] = {}
    started = time.monotonic()
    while left := processes_under(project.path):
        waited = time.monotonic() - started
        if waited > 2 * grace:
            raise AssertionError(f"queue processes still running {waited:.0f} s after SIGTERM and SIGKILL: "
                                 + ", ".join(f"{process.pid} {process.info['cmdline']}" for process in left))
        sig = signal.SIGTERM if waited < grace else signal.SIGKILL
        for process in left:
            if sent.get(process.pid) != sig:
                with contextlib.suppress(psutil.NoSuchProcess):
                    process.send_signal(sig)
                sent[process.pid] = sig
        time.sleep(0.1)
