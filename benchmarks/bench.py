"""What splitting a training run into cached DVC stages costs, as ratios to plain baselines measured in this run.

Prints a table and writes metrics/bench.json. Every figure is the median of REPEATS runs or more, stage and
baseline interleaved, because the machine may be shared. DVC runs in a copy of the project in a temp git repo.
"""

import argparse
import contextlib
import io
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from chunktrain.recipe.chunk import prepare, recipe_id  # noqa: E402
from chunktrain.recipe.specs import ChunkSpec  # noqa: E402
from chunktrain.runner import processes, trainer  # noqa: E402
from chunktrain.testing import (PROJECT_FILES, TINY_PARAMS, Project, new_project, project_env, ran,  # noqa: E402
                                run as run_command, stage_command)
from fast_repro import stages_in_order  # noqa: E402
from plain_loop import mlp, train  # noqa: E402

REPEATS = 3
TIMEOUT = 3600.0  # seconds a workload's command may take: minutes at most on a busy machine; this only ends a hang
NOOP_REPEATS = 7  # a no-op repro takes seconds, and on a shared machine a few of them catch a busy moment
PYTHON = sys.executable
# The pipeline's default model and batch size; data sizes are scaled down to keep `make bench` to minutes.
MODEL = {**TINY_PARAMS["model"], "args": {"hidden": [128, 128]}}
# The tests' train section (so every key the schema requires is there), at the default model's lr and batch,
# with every key a chunk's spec reads written out, as the per-key layout lists them all (DVC refuses a missing one).
TRAIN = {**{key: value for key, value in TINY_PARAMS["train"].items() if key != "chunks"}, "lr": 0.001,
         "batch_size": 128, "decay_params": "matrices", "betas": [0.9, 0.999], "grad_clip": None, "grad_accum": 1,
         "dtype": "float32"}


def pipeline_params(n_samples: int, chunks: int, epochs: int) -> dict:
    """params.yaml for a straight chain of `chunks` chunks of `epochs` epochs each, on 16-feature synthetic data."""
    synthetic = {**TINY_PARAMS["synthetic"], "n_samples": n_samples, "n_features": 16}
    return {"seed": 0, "synthetic": synthetic, "data": TINY_PARAMS["data"], "model": MODEL,
            "train": {**TRAIN, "chunks": chain(chunks, epochs)}}


def chain(chunks: int, epochs: int) -> dict:
    return {f"c{i}": {"from": f"c{i - 1}" if i > 1 else "init", "epochs": epochs} for i in range(1, chunks + 1)}


# The layout issue 18 rejected: each chunk depends on the params.yaml keys its spec is resolved from (DVC's own
# convention) instead of on the spec file. Its commands still read the specs, which plan still writes.
CHUNK_PARAMS = ["seed", "model", "train.optimizer", "train.decay_params", "train.lr", "train.batch_size",
                "train.weight_decay", "train.betas", "train.grad_clip", "train.grad_accum", "train.dtype",
                "train.nproc", "train.device", "train.schedule", "train.chunks.${key}"]  # a table's: no eval_*


def per_key_dvc_yaml(text: str) -> str:
    """dvc.yaml with each chunk stage's dep on data/plan/train/<chunk>.json replaced by `params:` CHUNK_PARAMS."""
    pipeline = yaml.safe_load(text)
    stage = pipeline["stages"]["train"]["do"]
    stage["deps"].remove("data/plan/train/${key}.json")
    stage["params"] = CHUNK_PARAMS
    return yaml.safe_dump(pipeline, sort_keys=False, width=1000)


@dataclass
class Layout:
    """A way to lay out the project: where its files come from, how its params.yaml is written."""

    name: str
    root: Path = ROOT
    params: Callable[[int, int, int], dict] = pipeline_params  # (n_samples, chunks, epochs) -> params.yaml
    files: list[str] = field(default_factory=lambda: PROJECT_FILES)  # the project's files under root
    dvc_yaml: str | None = None  # replaces root's dvc.yaml

    def project(self, path: Path, n_samples: int, chunks: int, epochs: int) -> Project:
        """A git repo at `path` with this layout's files and params.yaml."""
        project = new_project(path, self.params(n_samples, chunks, epochs), self.root)
        extra = set(self.files) - set(PROJECT_FILES)
        for name in extra:
            shutil.copy2(self.root / name, path / name)
        if self.dvc_yaml:
            (path / "dvc.yaml").write_text(self.dvc_yaml)
        if extra or self.dvc_yaml:
            project.commit(f"layout: {self.name}")
        return project

    @property
    def checks_params(self) -> str:
        """The stage that reads params.yaml and runs first (plan, or validate before issue 18)."""
        return next(iter(yaml.safe_load((self.root / "dvc.yaml").read_text())["stages"]))


SPEC_FILES = Layout("spec files")
PER_KEY_PARAMS = Layout("per-key params", dvc_yaml=per_key_dvc_yaml((ROOT / "dvc.yaml").read_text()))

# Run in the files of an earlier revision: its own params builder and project file list (in tests/helpers.py
# before issue 18), so its params.yaml has the layout its schema expects.
REVISION_PARAMS = """
import json, sys
root = sys.argv[1]
sys.path[:0] = [root + "/benchmarks", root + "/src", root + "/tests"]
import bench
try:
    from chunktrain.testing import PROJECT_FILES
except ImportError:
    from helpers import PROJECT_FILES
print(json.dumps({"params": bench.pipeline_params(*map(int, sys.argv[2:])), "files": PROJECT_FILES}))
"""


def revision(rev: str, work: Path) -> Layout:
    """The layout of git revision `rev` of this repo, its files extracted to `work`."""
    root = work / f"rev-{rev}"
    root.mkdir()
    archive = subprocess.run(["git", "archive", rev], cwd=ROOT, check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(root)], input=archive, check=True)

    def setup(n_samples: int, chunks: int, epochs: int) -> dict:
        output = subprocess.run([PYTHON, "-c", REVISION_PARAMS, str(root), str(n_samples), str(chunks), str(epochs)],
                                check=True, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": ""})
        return json.loads(output.stdout.splitlines()[-1])

    return Layout(rev, root, lambda *args: setup(*args)["params"], setup(10, 1, 1)["files"])


def wall(command: list[str], cwd: Path = ROOT, env: dict | None = None) -> tuple[float, str]:
    """Seconds a command takes, and its output; fails loudly if it fails."""
    started = time.perf_counter()
    result = run_command(command, cwd=cwd, env=dict(project_env(), PYTHONPATH=str(ROOT / "src"), **(env or {})),
                         check=False, timeout=TIMEOUT)
    seconds = time.perf_counter() - started
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} exited {result.returncode}:\n{result.stdout}")
    return seconds, result.stdout


def timed_dvc(project: Project, *args: str, env: dict | None = None) -> tuple[float, str]:
    """Seconds a dvc command takes in the project, and its output."""
    started = time.perf_counter()
    output = project.dvc(*args, env=env, timeout=TIMEOUT)
    return time.perf_counter() - started, output


def stage_process(name: str) -> list[str]:
    """Stage `name` as DVC runs it, to run in the project's folder: dvc.yaml's command through the shell, with
    $DVC_STAGE set (`python` is this venv's: project_env puts it first on PATH)."""
    return ["env", f"DVC_STAGE={name}", "sh", "-c", stage_command(name)]


def figure(name: str, value: float, baseline: float, unit: str, target: str, ok: bool, note: str) -> dict:
    """One row of the table and of metrics/bench.json."""
    return {"figure": name, "value": value, "baseline": baseline, "unit": unit,
            "ratio": value / baseline, "target": target, "met": ok, "note": note}


def quiet_project(root: Path, params: dict) -> Project:
    """A project folder with its data and init checkpoint, made by its stages without their progress lines."""
    project = new_project(root, params, git=False)
    with contextlib.redirect_stdout(io.StringIO()):
        project.generate()
        project.init()
    return project


def throughput(work: Path) -> dict:
    """samples/s of a chunk's training (trainer.train) vs the plain loop on the same tensors, epoch by epoch."""
    # 80,000 rows: an epoch of about 0.4 s, long enough that a busy moment of a shared machine is a small part of it.
    project = quiet_project(work / "throughput", pipeline_params(100_000, 1, 1))
    plain_model = mlp(16, MODEL["args"]["hidden"])
    stage_rates, plain_rates = [], []
    with contextlib.chdir(project.root):  # the trainer's files are dvc.yaml's paths, from the project's root
        files = trainer.ChunkFiles.of("c1")
        spec, settings, code = ChunkSpec.read(files.spec), files.settings("c1"), recipe_id()
        world = processes.join(1, "cpu", "nproc", settings.threads)  # the plain loop runs on the CPU, in turn
        for _ in range(2 * REPEATS + 1):
            # What the trainer runs after reading its inputs: the loop with progress, metrics, snapshot checks.
            with contextlib.redirect_stdout(io.StringIO()):
                state = prepare(spec, files.parent(spec), files.dataset, files.snapshot, world, code)
                started = time.perf_counter()
                trainer.train(state, files, world, settings)
            stage_rates.append(state.batches.samples / (time.perf_counter() - started))
            train_split, val_split = state.batches.train, state.batches.val
            plain_rates += train(plain_model, train_split.x, train_split.y, val_split.x, val_split.y, epochs=1,
                                 batch_size=TRAIN["batch_size"], lr=TRAIN["lr"])
    # The first round of each pays one-off costs (torch imports torch._dynamo on an optimizer's first use).
    stage, plain = statistics.median(stage_rates[1:]), statistics.median(plain_rates[1:])
    return figure("training throughput", stage, plain, "samples/s", ">= 0.95", stage / plain >= 0.95,
                  f"{state.batches.samples:,} rows, MLP 16-128-128-1, Adam, batch 128; median of {2 * REPEATS}"
                  " one-epoch chunks after one to warm up, stage and plain in turn, in one process")


def fixed_cost(work: Path) -> dict:
    """A chunk that trains (next to) nothing vs `python -c "import torch"`."""
    # 10 rows leave 8 to train on: one step of one 8-row batch, the least a chunk can do.
    project = quiet_project(work / "fixed", pipeline_params(10, 1, 1))
    stage, bare, optimizer = [], [], []
    for _ in range(REPEATS + 2):
        stage.append(wall(stage_process("train@c1"), cwd=project.root)[0])
        bare.append(wall([PYTHON, "-c", "import torch"])[0])
        # What any training script pays too: torch imports torch._dynamo on the first optimizer call.
        optimizer.append(wall([PYTHON, "-c", "import torch; torch.optim.Adam(torch.nn.Linear(1, 1).parameters())"])[0])
    value, baseline = statistics.median(stage), statistics.median(bare)
    return figure("fixed cost of a stage", value, baseline, "s", "<= 1.5", value / baseline <= 1.5,
                  "src/train.py on 8 rows, 1 step; baseline: python -c 'import torch'; import torch and build"
                  f" an Adam: {statistics.median(optimizer):.2f} s")


STAGE_EPOCHS = 15  # the workload of the per-step target: one chunk of 15 epochs on 64,000 training rows


def stage_vs_plain(work: Path, n_samples: int = 80_000, epochs: int = STAGE_EPOCHS, repeats: int = REPEATS) -> dict:
    """`dvc repro -f -s train@c1`, one chunk of `epochs` epochs, vs plain_loop.py training as many on the same
    dataset in one process; in turn, which goes first alternating; both at the stage's default thread count."""
    project = new_project(work / "stage", pipeline_params(n_samples, 1, epochs))
    project.dvc("repro", "init")
    # train.threads' default, the CPUs this process may use, set for the plain loop's torch too
    env = {"OMP_NUM_THREADS": str(processes.available_cpus())}
    stage, plain, loop_rates = [], [], {"stage": [], "plain": []}

    def run_stage() -> None:
        seconds, output = timed_dvc(project, "repro", "-f", "-s", "train@c1", env=env)
        assert ran(output) == {"train@c1"}, output
        stage.append(seconds)
        loop_rates["stage"] += epoch_rates(output)[1:]

    def run_plain() -> None:
        seconds, output = wall([PYTHON, str(ROOT / "benchmarks/plain_loop.py"), "--dataset", str(project.dataset),
                                "--epochs", str(epochs)], env=env)
        plain.append(seconds)
        loop_rates["plain"] += json.loads(output.splitlines()[-1])["samples_per_s"][1:]

    for repeat in range(repeats):
        pair = [run_stage, run_plain]
        for run in pair if repeat % 2 == 0 else pair[::-1]:
            run()
    value, baseline = statistics.median(stage), statistics.median(plain)
    loop_stage, loop_plain = (statistics.median(loop_rates[name]) for name in ("stage", "plain"))
    return figure("chunk stage vs plain loop", value, baseline, "s", "<= 1.05", value / baseline <= 1.05,
                  f"dvc repro -f -s train@c1: {epochs} epochs of {int(n_samples * 0.8):,} rows, MLP 16-128-128-1, Adam,"
                  f" batch 128, {env['OMP_NUM_THREADS']} thread(s) (OMP_NUM_THREADS, both); baseline: plain_loop.py"
                  f" on the same dataset folder, one process; median of {repeats} each, in turn (stage"
                  f" {', '.join(f'{t:.2f}' for t in stage)} s; plain {', '.join(f'{t:.2f}' for t in plain)} s)."
                  f" In the loop, epochs after the first, val loss included: stage {loop_stage:,.0f}, plain"
                  f" {loop_plain:,.0f} samples/s ({loop_stage / loop_plain:.3f})")


def epoch_rates(output: str) -> list[float]:
    """samples/s of each epoch, from a table chunk's progress lines ("train@c1 epoch 2/15: ... 1,234 samples/s")."""
    rates = re.findall(r"^train@\S+ epoch \d+/\d+: .* ([\d,]+) samples/s$", output, re.MULTILINE)
    return [float(rate.replace(",", "")) for rate in rates]


HEAVY = 0.05  # s: an imported package worth naming


def import_times(stderr: str) -> tuple[float, dict[str, tuple[float, str]]]:
    """From `python -X importtime` output: seconds spent importing in all, and each import over HEAVY seconds (a
    package, or any module imported at top level) with the module of our code that imported it ("top level": the
    script itself, or a function at run time)."""
    rows = []  # (depth, name, cumulative seconds), children before their parent
    for line in stderr.splitlines():
        match = re.match(r"import time:\s+\d+ \|\s+(\d+) \|( *)(\S+)", line)
        if match:
            rows.append((len(match[2]) // 2, match[3], int(match[1]) / 1e6))
    total = sum(seconds for depth, _, seconds in rows if depth == 0)
    heavy = {}
    for index, (depth, name, seconds) in enumerate(rows):
        if seconds < HEAVY or name.startswith(("chunktrain", "_")) or ("." in name and depth > 0):
            continue
        via = "top level"
        for parent_depth, parent, _ in rows[index + 1:]:  # its importers, innermost first
            if parent_depth < depth:
                depth = parent_depth
                if parent.startswith("chunktrain."):
                    via = parent
                    break
        heavy[name] = (seconds, via)
    return total, heavy


def imports(work: Path) -> list[dict]:
    """Seconds each stage of a reproduced project spends importing (`python -X importtime`), vs `import torch`."""
    project = new_project(work / "imports", {**TINY_PARAMS, "train": {**TINY_PARAMS["train"], "chunks": chain(1, 1)}})
    project.dvc("repro")
    stages = stages_in_order(project.path)
    spent, heavy, torch = {name: [] for name, _ in stages}, {}, []
    for _ in range(REPEATS):
        result = subprocess.run([PYTHON, "-X", "importtime", "-c", "import torch"], capture_output=True, text=True,
                                check=True)
        torch.append(import_times(result.stderr)[0])
        for name, command in stages:  # run again as dvc runs it, so that imports made at run time count too
            result = subprocess.run(command.replace("python ", f"{PYTHON} -X importtime ", 1), shell=True,
                                    cwd=project.path, env={**project_env(), "DVC_STAGE": name}, capture_output=True,
                                    text=True, check=True)
            seconds, heavy[name] = import_times(result.stderr)
            spent[name].append(seconds)
    baseline = statistics.median(torch)
    rows = []
    for name, _ in stages:
        value = statistics.median(spent[name])
        packages = ", ".join(f"{package} {seconds:.2f} s (via {via})"
                             for package, (seconds, via) in heavy[name].items())
        note = f"baseline: python -c 'import torch'; imports over {HEAVY} s: {packages}"
        if name in ("init", "evaluate") or name.startswith("train@"):  # they build a model: torch is theirs to pay
            rows.append(figure(f"imports of {name}", value, baseline, "s", "-", True, note))
        else:  # the others should not import torch
            rows.append(figure(f"imports of {name}", value, baseline, "s", "<= 0.5", value / baseline <= 0.5, note))
    return rows


def whole_pipeline(work: Path, n_samples: int, epochs: int, before: Layout | None) -> list[dict]:
    """`dvc repro -f` of 3 chunks in a fresh project vs the plain loop script doing the same epochs; the same stage
    commands run in turn without DVC; and, with `before`, that revision's pipeline."""
    repro, commands, plain, old = [], [], [], []
    per_stage = {}
    for repeat in range(REPEATS):
        project = SPEC_FILES.project(work / f"pipeline{repeat}", n_samples, 3, epochs)
        repro.append(timed_dvc(project, "repro", "-f")[0])
        shutil.rmtree(project.path)
        project = SPEC_FILES.project(work / f"commands{repeat}", n_samples, 3, epochs)
        for name, command in stages_in_order(project.path):
            started = time.perf_counter()
            subprocess.run(command, shell=True, cwd=project.path, env={**project_env(), "DVC_STAGE": name},
                           check=True, stdout=subprocess.DEVNULL)
            per_stage.setdefault(name, []).append(time.perf_counter() - started)
        commands.append(sum(seconds[-1] for seconds in per_stage.values()))
        shutil.rmtree(project.path)
        plain.append(wall([PYTHON, str(ROOT / "benchmarks/plain_loop.py"), "--n-samples", str(n_samples),
                           "--epochs", str(3 * epochs)])[0])
        if before:
            project = before.project(work / f"before{repeat}", n_samples, 3, epochs)
            old.append(timed_dvc(project, "repro", "-f")[0])
            shutil.rmtree(project.path)
    baseline = statistics.median(plain)
    workload = f"{int(n_samples * 0.8):,} rows x 3 chunks x {epochs} epochs"
    stage_seconds = ", ".join(f"{name} {statistics.median(seconds):.2f}" for name, seconds in per_stage.items())
    rows = [figure("whole pipeline", statistics.median(repro), baseline, "s", "<= 1.3",
                   statistics.median(repro) / baseline <= 1.3,
                   f"dvc repro -f, {workload}; baseline: the plain loop script, one process, data made in memory"),
            figure("stage commands alone", statistics.median(commands), baseline, "s", "-", True,
                   f"the {len(per_stage)} commands of the same dvc.yaml run in order without DVC: {stage_seconds} s")]
    if before:
        rows.append(figure(f"whole pipeline ({before.name})", statistics.median(old), baseline, "s", "<= 1.3",
                           statistics.median(old) / baseline <= 1.3, f"dvc repro -f of its pipeline, {workload}"))
    return rows


def incremental(work: Path, n_samples: int, epochs: int) -> dict:
    """Changing the last of 5 equal chunks vs running all 5 (each followed by evaluate)."""
    project = new_project(work / "incremental", pipeline_params(n_samples, 5, epochs))
    project.dvc("repro", "init")
    every, last = [], []
    for repeat in range(REPEATS):
        params = project.params
        params["train"]["lr"] = 0.001 + 0.0001 * repeat  # the default of every chunk: all 5 rerun
        project.params = params
        seconds, output = timed_dvc(project, "repro")
        assert {f"train@c{i}" for i in range(1, 6)} <= ran(output), output
        every.append(seconds)
        params["train"]["chunks"]["c5"]["lr"] = 0.0005 + 0.0001 * repeat  # only c5 and evaluate rerun
        project.params = params
        seconds, output = timed_dvc(project, "repro")
        assert ran(output) == {"plan", "train@c5", "evaluate"}, output
        last.append(seconds)
    value, baseline = statistics.median(last), statistics.median(every)
    return figure("incremental rerun", value, baseline, "s", "<= 0.25", value / baseline <= 0.25,
                  f"5 chunks x {epochs} epoch(s) of {int(n_samples * 0.8):,} rows; baseline: all 5 rerun")


def checkpoint_handoff(work: Path) -> list[dict]:
    """Save + `dvc add` + load of a 1.2 GB checkpoint vs raw write + read of as many bytes; and peak RSS."""
    project = new_project(work / "handoff", TINY_PARAMS)
    path = project.path / "data/big.pt"
    path.parent.mkdir()
    handoff, raw, raw_save, peaks, copies, parts = [], [], [], [], set(), []
    for _ in range(REPEATS):
        saved = json.loads(wall([PYTHON, str(ROOT / "benchmarks/checkpoint_io.py"), "save", str(path)])[1])
        size = path.stat().st_size
        # `dvc add`, as the dvc command runs it, with the seconds of its md5, copy into the cache and relink
        cached, output = wall([PYTHON, str(ROOT / "benchmarks/dvc_add.py"), str(path)], cwd=project.path)
        dvc_parts = json.loads(output.splitlines()[-1])
        copies.add(second_copy(path))
        loaded = json.loads(wall([PYTHON, str(ROOT / "benchmarks/checkpoint_io.py"), "load", str(path)])[1])
        handoff.append(saved["seconds"] + cached + loaded["seconds"])
        parts.append((saved["seconds"], cached, dvc_parts["md5"], dvc_parts["cache"], dvc_parts["relink"],
                      loaded["seconds"]))
        peaks.append(max(saved["peak_rss"], loaded["peak_rss"]))
        project.dvc("remove", "data/big.pt.dvc")
        shutil.rmtree(project.path / ".dvc/cache")
        path.unlink()
        blob = work / "raw.bin"
        timings = json.loads(wall([PYTHON, str(ROOT / "benchmarks/checkpoint_io.py"), "raw", str(blob), str(size)])[1])
        raw.append(timings["write_seconds"] + timings["read_seconds"])
        blob.unlink()
        raw_save.append(json.loads(wall([PYTHON, str(ROOT / "benchmarks/checkpoint_io.py"), "raw-tensors",
                                         str(blob)])[1])["seconds"])
        blob.unlink()
    gb = size / 1e9
    value, baseline = statistics.median(handoff) / gb, statistics.median(raw) / gb
    peak = statistics.median(peaks) / 1e9
    save, cache, md5, to_cache, relink, load = (statistics.median(part) / gb for part in zip(*parts))
    tensors = statistics.median(raw_save) / gb
    return [
        figure("checkpoint hand-off", value, baseline, "s/GB", "<= 3.0", value / baseline <= 3.0,
               f"{saved['parameters'] / 1e6:.1f}M params + Adam, {gb:.2f} GB; {'; '.join(sorted(copies))}; s/GB: save"
               f" {save:.2f} (the same tensors' bytes written raw, fsync included, by a process that built them:"
               f" {tensors:.2f}), dvc add {cache:.2f} (md5 {md5:.2f}, copy into .dvc/cache {to_cache:.2f}, copy back"
               f" over the workspace file {relink:.2f}, the rest DVC's start-up), load {load:.2f}"),
        figure("peak memory", peak, gb, "GB", "<= 1.5", peak / gb <= 1.5,
               "max of the saving and the loading process; the saver holds the state it saves"),
    ]


def second_copy(path: Path) -> str:
    """How the workspace file relates to DVC's cache after `dvc add`."""
    if path.is_symlink():
        return "no second copy (symlink)"
    if path.stat().st_nlink > 1:
        return "no second copy (hardlink)"
    return "a second full copy in .dvc/cache"


GROWTH = (10, 100)  # chunks in the chain


def growth_project(path: Path, chunks: int, layout: Layout) -> Project:
    """A reproduced chain of `chunks` tiny chunks (1 epoch of 256 rows each) in `layout`.

    fast_repro.py runs the stages in one process, so a 100-chunk project is ready in seconds, not minutes.
    """
    project = layout.project(path, 320, chunks, 1)
    project.run(PYTHON, str(ROOT / "benchmarks/fast_repro.py"), str(project.path), timeout=TIMEOUT)
    project.commit("reproduced")
    assert not ran(project.dvc("repro")), f"fast_repro.py left a stage for dvc repro to run in {path}"
    return project


def append_chunk(project: Project) -> str:
    """Add a chunk after the last one of the chain; its name."""
    chunks = project.params["train"]["chunks"]
    new, last = f"c{len(chunks) + 1}", f"c{len(chunks)}"
    project.edit_params(lambda params: params["train"]["chunks"].update({new: {"from": last, "epochs": 1}}))
    return new


def growth(work: Path, layouts: list[Layout]) -> list[dict]:
    """DVC's bookkeeping against the number of chunks: no-op repro, status, appending one chunk; layouts interleaved."""
    projects = {(layout.name, n): growth_project(work / f"growth-{index}-{n}", n, layout)
                for index, layout in enumerate(layouts) for n in GROWTH}
    times = {key: {"repro": [], "status": [], "append": []} for key in projects}
    version = []
    for _ in range(NOOP_REPEATS):
        version.append(timed_dvc(next(iter(projects.values())), "--version")[0])
        for key, project in projects.items():
            seconds, output = timed_dvc(project, "repro")
            assert not ran(output), output
            times[key]["repro"].append(seconds)
            times[key]["status"].append(timed_dvc(project, "status")[0])
    for _ in range(2):  # each appends one more chunk to the chain
        for layout in layouts:
            for n in GROWTH:
                project = projects[(layout.name, n)]
                new = append_chunk(project)
                seconds, output = timed_dvc(project, "repro")
                assert ran(output) == {layout.checks_params, f"train@{new}", "evaluate"}, output
                times[(layout.name, n)]["append"].append(seconds)
    rows = []
    small, big = GROWTH
    for layout in layouts:
        median = {n: {what: statistics.median(values) for what, values in times[(layout.name, n)].items()}
                  for n in GROWTH}
        curve = "; ".join(f"{n} chunks: no-op repro {median[n]['repro']:.2f} s, status {median[n]['status']:.2f} s,"
                          f" append {median[n]['append']:.2f} s" for n in GROWTH)
        rows += [
            figure(f"no-op repro, {small} chunks ({layout.name})", median[small]["repro"], statistics.median(version),
                   "s", "<= 1.5 s", median[small]["repro"] <= 1.5, "nothing changed; baseline: dvc --version"),
            figure(f"no-op repro, {big} chunks ({layout.name})", median[big]["repro"], median[small]["repro"], "s",
                   "<= 4 s", median[big]["repro"] <= 4.0, f"baseline: {small} chunks; {curve}"),
            figure(f"append, {big} chunks ({layout.name})", median[big]["append"], median[small]["append"], "s",
                   "<= 1.2", median[big]["append"] / median[small]["append"] <= 1.2,
                   f"baseline: {small} chunks; append one chunk and dvc repro, median of 2; no-op and status: median"
                   f" of {NOOP_REPEATS}"),
        ]
    return rows


def print_table(rows: list[dict]) -> None:
    """The figures as a table, then what each one measured."""
    print(f"\n{'figure':<40}{'stage':>12}{'baseline':>12}  {'unit':<10}{'ratio':>7}  {'target':<9}  met")
    for row in rows:
        print(f"{row['figure']:<40}{row['value']:>12.3f}{row['baseline']:>12.3f}  {row['unit']:<10}"
              f"{row['ratio']:>7.2f}  {row['target']:<9}  {'yes' if row['met'] else 'NO'}")
    for row in rows:
        print(f"  {row['figure']}: {row['note']}")


BENCHMARKS = ["throughput", "stage", "fixed-cost", "imports", "pipeline", "incremental", "handoff", "growth"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=ROOT / "metrics/bench.json")
    parser.add_argument("--full", action="store_true",
                        help="the issue's workload (about 20 s of plain training on 2 idle cores) instead of ~3 s")
    parser.add_argument("--before", metavar="REV",
                        help="also measure git revision REV's whole pipeline and growth curve, in turn with this one's")
    parser.add_argument("--only", choices=BENCHMARKS,
                        help="this benchmark alone; its rows replace theirs in --out, marked with this command")
    args = parser.parse_args()
    n_samples, epochs = (200_000, 13) if args.full else (30_000, 2)
    with tempfile.TemporaryDirectory(prefix="chunktrain-bench-") as work:
        work = Path(work)
        before = revision(args.before, work) if args.before else None
        measures = {"throughput": lambda: [throughput(work)],
                    "stage": lambda: [stage_vs_plain(work)],
                    "fixed-cost": lambda: [fixed_cost(work)],
                    "imports": lambda: imports(work),
                    "pipeline": lambda: whole_pipeline(work, n_samples, epochs, before),
                    "incremental": lambda: [incremental(work, 20_000, 1)],
                    "handoff": lambda: checkpoint_handoff(work),
                    "growth": lambda: growth(work, [SPEC_FILES, PER_KEY_PARAMS] + ([before] if before else []))}
        rows = []
        for name in BENCHMARKS:
            if args.only and name != args.only:
                continue
            started = time.perf_counter()
            rows += measures[name]()
            print(f"{name}: {time.perf_counter() - started:.0f} s: {rows[-1]}", file=sys.stderr, flush=True)
    print_table(rows)
    result = {"command": " ".join(["python benchmarks/bench.py", *sys.argv[1:]]), "machine": machine(),
              "repeats": REPEATS, "figures": rows}
    if args.only and args.out.exists():  # the other rows stay as the run that the file's command names left them
        last = json.loads(args.out.read_text())
        result = {**last, "figures": replace_rows(last["figures"], [{**row, "command": result["command"],
                                                                      "machine": result["machine"]} for row in rows])}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")


def replace_rows(rows: list[dict], new: list[dict]) -> list[dict]:
    """`rows` with each row of `new` in place of the one of the same figure, or appended."""
    by_figure = {row["figure"]: row for row in new}
    kept = [by_figure.pop(row["figure"], row) for row in rows]
    return kept + list(by_figure.values())


def machine() -> str:
    """What the figures were measured on."""
    import torch
    return f"{os.cpu_count()} CPU cores, torch {torch.__version__}, {'CUDA' if torch.cuda.is_available() else 'no GPU'}"


if __name__ == "__main__":
    main()
