"""What splitting a training run into cached DVC stages costs, as ratios to plain baselines measured in this run.

Prints a table and writes metrics/bench.json. Every figure is the median of REPEATS runs, stage and baseline
interleaved, because the machine may be shared. DVC runs in a copy of the project in a temp git repo.
"""

import argparse
import contextlib
import io
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "src"), str(ROOT / "tests")]

from helpers import TINY_PARAMS, Project, Stages, new_project, project_env, ran  # noqa: E402

from tqdm import tqdm  # noqa: E402

from chunktrain.data import read_split  # noqa: E402
from chunktrain.model import build_model, build_optimizer, model_config  # noqa: E402
from chunktrain.faults import crash_point  # noqa: E402
from chunktrain.resume import SnapshotSchedule  # noqa: E402
from chunktrain.training import Position, train_epochs  # noqa: E402
from plain_loop import mlp, train  # noqa: E402

REPEATS = 3
PYTHON = sys.executable
# The pipeline's default model and batch size; data sizes are scaled down to keep `make bench` to minutes.
MODEL = {**TINY_PARAMS["model"], "hidden": [128, 128]}
# The tests' train section (so every key the schema requires is there), at the default model's lr and batch.
TRAIN = {**{key: value for key, value in TINY_PARAMS["train"].items() if key != "chunks"}, "lr": 0.001,
         "batch_size": 128}


def pipeline_params(n_samples: int, chunks: int, epochs: int) -> dict:
    """params.yaml for a straight chain of `chunks` chunks of `epochs` epochs each."""
    data = {**TINY_PARAMS["data"], "n_samples": n_samples, "n_features": 16}
    chain = {f"c{i}": {"from": f"c{i - 1}" if i > 1 else "init", "epochs": epochs} for i in range(1, chunks + 1)}
    return {"seed": 0, "data": data, "model": MODEL, "train": {**TRAIN, "chunks": chain}}


def wall(command: list[str], cwd: Path = ROOT) -> tuple[float, str]:
    """Seconds a command takes, and its output; fails loudly if it fails."""
    started = time.perf_counter()
    result = subprocess.run(command, cwd=cwd, env=dict(project_env(), PYTHONPATH=str(ROOT / "src")), text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    seconds = time.perf_counter() - started
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} exited {result.returncode}:\n{result.stdout}")
    return seconds, result.stdout


def timed_dvc(project: Project, *args: str, env: dict | None = None) -> tuple[float, str]:
    """Seconds a dvc command takes in the project, and its output."""
    started = time.perf_counter()
    output = project.dvc(*args, env=env)
    return time.perf_counter() - started, output


def figure(name: str, value: float, baseline: float, unit: str, target: str, ok: bool, note: str) -> dict:
    """One row of the table and of metrics/bench.json."""
    return {"figure": name, "value": value, "baseline": baseline, "unit": unit,
            "ratio": value / baseline, "target": target, "met": ok, "note": note}


def quiet_stages(root: Path, params: dict) -> Stages:
    """Data and an init checkpoint on temp paths, made without the stages' progress lines."""
    stages = Stages(root, params)
    with contextlib.redirect_stdout(io.StringIO()):
        stages.generate()
        stages.init()
    return stages


def train_command(stages: Stages, chunk: str, parent: str) -> list[str]:
    """src/train.py as dvc.yaml runs it, on the Stages' temp paths."""
    return [PYTHON, str(ROOT / "src/train.py"), "--params", str(stages.params_path), "--chunk", chunk,
            "--parent", str(stages.checkpoint(parent)), "--train", str(stages.split["train"]),
            "--val", str(stages.split["val"]), "--out", str(stages.checkpoint(chunk)),
            "--metrics", str(stages.root / f"metrics/{chunk}.json"),
            "--snapshot", str(stages.root / f".resume/{chunk}/snapshot.pt")]


def throughput(work: Path) -> dict:
    """samples/s of the chunk stage's loop vs the plain loop on the same tensors, epoch by epoch in turn."""
    stages = quiet_stages(work / "throughput", pipeline_params(20_000, 1, 1))
    config = model_config(16, MODEL["hidden"], TRAIN["optimizer"])
    train_split, val_split = read_split(stages.split["train"]), read_split(stages.split["val"])
    model = build_model(config)
    optimizer = build_optimizer(model, config)
    plain_model = mlp(16, MODEL["hidden"])
    stage_rates, plain_rates = [], []
    schedule = SnapshotSchedule(TRAIN["snapshot_every_steps"], TRAIN["snapshot_every_seconds"])
    for epoch in range(1, 2 * REPEATS + 1):
        # As src/train.py calls it, progress bar included (disabled when not on a terminal, as here).
        with tqdm(total=len(train_split.y), disable=None) as bar:

            def on_step(position: Position, batch_len: int) -> None:  # src/train.py's, when no snapshot is due
                bar.update(batch_len)
                crash_point("step")
                schedule.due(position.batch)

            started = time.perf_counter()
            train_epochs(model, optimizer, train_split, val_split, Position(epoch=epoch), last_epoch=epoch,
                         batch_size=TRAIN["batch_size"], seed=0, on_step=on_step)
            stage_rates.append(len(train_split.y) / (time.perf_counter() - started))
        plain_rates += train(plain_model, train_split.x, train_split.y, val_split.x, val_split.y, epochs=1,
                             batch_size=TRAIN["batch_size"], lr=TRAIN["lr"])
    stage, plain = statistics.median(stage_rates), statistics.median(plain_rates)
    return figure("training throughput", stage, plain, "samples/s", ">= 0.95", stage / plain >= 0.95,
                  f"{len(train_split.y):,} rows, MLP 16-128-128-1, Adam, batch 128; median of {2 * REPEATS}"
                  " epochs, stage and plain in turn, in one process")


def whole_pipeline(work: Path, n_samples: int, epochs: int) -> dict:
    """`dvc repro` from an empty cache (3 chunks) vs the plain loop script doing the same epochs."""
    params = pipeline_params(n_samples, 3, epochs)
    repro, plain = [], []
    for repeat in range(REPEATS):
        project = new_project(work / f"pipeline{repeat}", params)
        repro.append(timed_dvc(project, "repro")[0])
        plain.append(wall([PYTHON, str(ROOT / "benchmarks/plain_loop.py"), "--n-samples", str(n_samples),
                           "--epochs", str(3 * epochs)])[0])
        shutil.rmtree(project.path)
    value, baseline = statistics.median(repro), statistics.median(plain)
    return figure("whole pipeline", value, baseline, "s", "<= 1.10", value / baseline <= 1.10,
                  f"{int(n_samples * 0.8):,} rows x 3 chunks x {epochs} epochs; baseline: one process,"
                  " data made in memory")


def fixed_cost(work: Path) -> dict:
    """A chunk that trains (next to) nothing vs `python -c "import torch"`."""
    # 10 rows leave 8 to train on: one step of one 8-row batch, the least a chunk can do.
    stages = quiet_stages(work / "fixed", pipeline_params(10, 1, 1))
    chunk, bare, optimizer = [], [], []
    for _ in range(REPEATS + 2):
        chunk.append(wall(train_command(stages, "c1", "init"))[0])
        bare.append(wall([PYTHON, "-c", "import torch"])[0])
        # What any training script pays too: torch imports torch._dynamo on the first optimizer call.
        optimizer.append(wall([PYTHON, "-c", "import torch; torch.optim.Adam(torch.nn.Linear(1, 1).parameters())"])[0])
    value, baseline = statistics.median(chunk), statistics.median(bare)
    return figure("fixed cost of a stage", value, baseline, "s", "<= 1.5", value / baseline <= 1.5,
                  "src/train.py on 8 rows, 1 step; baseline: python -c 'import torch'; import torch and build"
                  f" an Adam: {statistics.median(optimizer):.2f} s")


def noop_repro(work: Path) -> dict:
    """`dvc repro` with nothing to do, 10 chunks, vs `dvc --version`."""
    project = new_project(work / "noop", pipeline_params(200, 10, 1))
    project.dvc("repro")
    project.commit("reproduced")
    noop, version = [], []
    for _ in range(REPEATS + 2):
        seconds, output = timed_dvc(project, "repro")
        assert not ran(output), output
        noop.append(seconds)
        version.append(timed_dvc(project, "--version")[0])
    value, baseline = statistics.median(noop), statistics.median(version)
    return figure("no-op repro", value, baseline, "s", "<= 1.5 s", value <= 1.5,
                  "10 chunks, nothing changed; baseline: dvc --version")


GROWTH = (10, 30, 100)  # chunks in the chain


def growth_project(path: Path, chunks: int, root: Path, env: dict) -> Project:
    """A reproduced chain of `chunks` tiny chunks (1 epoch of 256 rows each), with the project files of `root`.

    fast_repro.py runs the stages in one process, so a 100-chunk project is ready in seconds, not minutes.
    """
    project = new_project(path, pipeline_params(320, chunks, 1), root)
    project.run(PYTHON, str(ROOT / "benchmarks/fast_repro.py"), str(project.path), env=env)
    project.commit("reproduced")
    assert not ran(project.dvc("repro", env=env)), "fast_repro.py left a stage for dvc repro to run"
    return project


def hide_yaml_clib(work: Path) -> dict:
    """The environment of a venv without ruamel.yaml.clib, which the revisions before issue 14 did not install."""
    shim = work / "no-clib"
    shim.mkdir(exist_ok=True)
    (shim / "_ruamel_yaml.py").write_text("raise ImportError('hidden: ruamel.yaml.clib was not a requirement')\n")
    return {"PYTHONPATH": str(shim)}


def growth(work: Path, before: str | None) -> list[dict]:
    """DVC's bookkeeping against the number of chunks: no-op repro, status, appending one chunk; layouts interleaved.

    With `before` (a git revision), its files are measured too, in turn with this checkout's, in a venv as it had
    it: without ruamel.yaml.clib.
    """
    layouts = {"after": (ROOT, {})}
    if before:
        layouts["before"] = (checkout(before, work / "before"), hide_yaml_clib(work))
    projects = {(layout, n): growth_project(work / f"growth-{layout}-{n}", n, root, env)
                for layout, (root, env) in layouts.items() for n in GROWTH}
    times = {key: {"repro": [], "status": [], "append": []} for key in projects}
    for _ in range(REPEATS):
        for (layout, n), project in projects.items():
            env = layouts[layout][1]
            seconds, output = timed_dvc(project, "repro", env=env)
            assert not ran(output), output
            times[(layout, n)]["repro"].append(seconds)
            times[(layout, n)]["status"].append(timed_dvc(project, "status", env=env)[0])
    for repeat in range(2):  # each appends one more chunk to the chain
        for (layout, n), project in projects.items():
            new, last = f"c{n + repeat + 1}", f"c{n + repeat}"
            project.edit_params(lambda params: params["train"]["chunks"].update({new: {"from": last, "epochs": 1}}))
            seconds, output = timed_dvc(project, "repro", env=layouts[layout][1])
            assert ran(output) == {"validate", f"train@{new}", "evaluate"}, output
            times[(layout, n)]["append"].append(seconds)
    rows = []
    for layout in layouts:
        median = {n: {what: statistics.median(values) for what, values in times[(layout, n)].items()} for n in GROWTH}
        curve = "; ".join(f"{n} chunks: no-op repro {median[n]['repro']:.2f} s, status {median[n]['status']:.2f} s,"
                          f" append {median[n]['append']:.2f} s" for n in GROWTH)
        big, small = GROWTH[-1], GROWTH[0]
        rows.append(figure(f"no-op repro, {big} chunks ({layout})", median[big]["repro"], median[small]["repro"], "s",
                           "<= 2 s", median[big]["repro"] <= 2.0, f"baseline: {small} chunks; {curve}"))
        rows.append(figure(f"append at {big} vs {small} ({layout})", median[big]["append"], median[small]["append"],
                           "s", "<= 1.2", median[big]["append"] / median[small]["append"] <= 1.2,
                           f"append one chunk and dvc repro, median of 2; no-op and status: median of {REPEATS}"))
    return rows


def checkout(rev: str, path: Path) -> Path:
    """The files of git revision `rev` of this repo, in `path`."""
    path.mkdir()
    archive = subprocess.run(["git", "archive", rev], cwd=ROOT, check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(path)], input=archive, check=True)
    return path


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
        assert ran(output) == {"validate", "train@c5", "evaluate"}, output
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
                      loaded["seconds"] - loaded["sha256_seconds"], loaded["sha256_seconds"]))
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
    copy_note = "; ".join(sorted(copies))
    save, cache, md5, to_cache, relink, load, sha = (statistics.median(part) / gb for part in zip(*parts))
    tensors = statistics.median(raw_save) / gb
    return [
        figure("checkpoint hand-off", value, baseline, "s/GB", "<= 3.0", value / baseline <= 3.0,
               f"{saved['parameters'] / 1e6:.1f}M params + Adam, {gb:.2f} GB; {copy_note}; s/GB: save {save:.2f}"
               f" (the same tensors' bytes written raw, fsync included, by a process that built them: {tensors:.2f}),"
               f" dvc add {cache:.2f} (md5 {md5:.2f}, copy into .dvc/cache {to_cache:.2f}, copy back over the"
               f" workspace file {relink:.2f}, the rest DVC's start-up), load {load:.2f}, parent sha256 {sha:.2f}"),
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


def print_table(rows: list[dict]) -> None:
    """The figures as a table, then what each one measured."""
    print(f"\n{'figure':<24}{'stage':>12}{'baseline':>12}  {'unit':<10}{'ratio':>7}  {'target':<9}  met")
    for row in rows:
        print(f"{row['figure']:<24}{row['value']:>12.3f}{row['baseline']:>12.3f}  {row['unit']:<10}"
              f"{row['ratio']:>7.2f}  {row['target']:<9}  {'yes' if row['met'] else 'NO'}")
    for row in rows:
        print(f"  {row['figure']}: {row['note']}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=ROOT / "metrics/bench.json")
    parser.add_argument("--full", action="store_true",
                        help="the issue's workload (about 60 s of training on 2 idle cores) instead of ~10 s")
    parser.add_argument("--before", metavar="REV", help="also measure the growth curve of git revision REV")
    parser.add_argument("--only", choices=["throughput", "fixed-cost", "no-op", "pipeline", "incremental", "handoff",
                                           "growth"], help="this benchmark alone; prints it, writes no --out")
    args = parser.parse_args()
    n_samples, epochs = (200_000, 13) if args.full else (30_000, 2)  # full: about 60 s of plain training
    with tempfile.TemporaryDirectory(prefix="chunktrain-bench-") as work:
        work = Path(work)
        rows = []
        for name, measure in [("throughput", lambda: [throughput(work)]),
                              ("fixed-cost", lambda: [fixed_cost(work)]),
                              ("no-op", lambda: [noop_repro(work)]),
                              ("pipeline", lambda: [whole_pipeline(work, n_samples, epochs)]),
                              ("incremental", lambda: [incremental(work, 20_000, 1)]),
                              ("handoff", lambda: checkpoint_handoff(work)),
                              ("growth", lambda: growth(work, args.before))]:
            if args.only and name != args.only:
                continue
            started = time.perf_counter()
            rows += measure()
            print(f"{name}: {time.perf_counter() - started:.0f} s: {rows[-1]}", file=sys.stderr, flush=True)
    print_table(rows)
    if args.only:  # metrics/bench.json keeps the last full run
        return
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"machine": machine(), "repeats": REPEATS, "figures": rows}, indent=2) + "\n")


def machine() -> str:
    """What the figures were measured on."""
    import torch
    return f"{os.cpu_count()} CPU cores, torch {torch.__version__}, {'CUDA' if torch.cuda.is_available() else 'no GPU'}"


if __name__ == "__main__":
    main()
