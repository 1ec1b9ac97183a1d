"""Threads against the CPUs a process may use, and against other jobs on the machine.

--cpus N (default): a chunk confined to fewer CPUs than the host has (as in a container or a SLURM job), trained
with torch's default of one thread per host core and with train.threads' default (the CPUs it may use).
--load: the chunk, 8 epochs as a stage process on all CPUs, quiet and beside --busy other jobs (each a torch process
multiplying matrices on torch's default threads), with 1 thread, with one per CPU, and with one per CPU and
OMP_WAIT_POLICY=PASSIVE (threads that sleep instead of spinning while they wait for each other).
Alternated, the median of --repeat runs each; prints samples/s and the ratios.

python benchmarks/threads.py [--cpus 1] [--repeat 3]
python benchmarks/threads.py --load [--busy 2] [--repeat 3]
"""

import argparse
import contextlib
import copy
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from chunktrain.testing import TINY_PARAMS, new_project, project_env, write_params  # noqa: E402
from chunktrain.runner.processes import available_cpus  # noqa: E402

ROWS = 40_000
EPOCHS_UNDER_LOAD = 8
OTHER_JOB = "import torch\na = torch.randn(512, 512)\nwhile True:\n    a @ a"  # spins on every core, as training does


def table_chunk_params(epochs: int) -> dict:
    params = copy.deepcopy(TINY_PARAMS)
    params["synthetic"].update(n_samples=50_000, n_features=16)
    params["model"]["args"]["hidden"] = [128, 128]
    params["train"].update(batch_size=128, chunks={"c1": {"from": "init", "epochs": epochs}})
    return params


def confined(args: argparse.Namespace) -> None:
    os.environ.pop("OMP_NUM_THREADS", None)
    os.sched_setaffinity(0, sorted(os.sched_getaffinity(0))[:args.cpus])
    params = table_chunk_params(epochs=2)
    host = os.cpu_count()
    with tempfile.TemporaryDirectory() as tmp:
        project = new_project(Path(tmp), params, git=False)
        project.generate()
        project.init()
        rate = {"host cores": [], "auto": []}
        for _ in range(args.repeat):
            for label, threads in (("host cores", host), ("auto", None)):
                params["train"]["threads"] = threads
                write_params(project.params_path, params)
                started = time.perf_counter()
                project.train("c1")
                rate[label].append(2 * ROWS / (time.perf_counter() - started))
    median = {label: statistics.median(values) for label, values in rate.items()}
    print(f"{args.cpus} of {host} CPUs; auto gives {available_cpus()} thread(s), torch's default {host}")
    for label, value in median.items():
        print(f"{label:>10}: {value:,.0f} samples/s (median of {args.repeat})")
    print(f"auto / host cores: {median['auto'] / median['host cores']:.2f}")


@contextlib.contextmanager
def busy(processes: int):
    """`processes` other jobs that keep the CPUs busy until the block ends."""
    spinners = [subprocess.Popen([sys.executable, "-c", OTHER_JOB]) for _ in range(processes)]
    try:
        time.sleep(1)
        yield
    finally:
        for spinner in spinners:
            spinner.kill()
            spinner.wait()


def under_load(args: argparse.Namespace) -> None:
    from bench import stage_process

    cpus = available_cpus()
    ways = {"1 thread": {"OMP_NUM_THREADS": "1"}, f"{cpus} threads": {"OMP_NUM_THREADS": str(cpus)},
            f"{cpus} threads, PASSIVE": {"OMP_NUM_THREADS": str(cpus), "OMP_WAIT_POLICY": "PASSIVE"}}
    rate = {(load, way): [] for load in ("quiet", "loaded") for way in ways}
    with tempfile.TemporaryDirectory() as tmp:
        project = new_project(Path(tmp), table_chunk_params(EPOCHS_UNDER_LOAD), git=False)
        project.generate()
        project.init()
        for _ in range(args.repeat):
            for load in ("quiet", "loaded"):
                with busy(args.busy if load == "loaded" else 0):
                    for way, env in ways.items():
                        started = time.perf_counter()
                        subprocess.run(stage_process("train@c1"), cwd=project.path, check=True,
                                       env={**project_env(), **env}, stdout=subprocess.DEVNULL)
                        rate[load, way].append(EPOCHS_UNDER_LOAD * ROWS / (time.perf_counter() - started))
    median = {key: statistics.median(values) for key, values in rate.items()}
    best_quiet = max(median["quiet", way] for way in ways)
    print(f"a chunk stage of {EPOCHS_UNDER_LOAD} epochs of {ROWS:,} rows (MLP 16-128-128-1, batch 128) on {cpus} CPUs,"
          f" quiet and beside {args.busy} other jobs; samples/s, median of {args.repeat}, process start included")
    print(f"{'':<24}{'quiet':>10}{'loaded':>10}{'loaded/quiet':>14}{'quiet/best quiet':>18}")
    for way in ways:
        quiet, loaded = median["quiet", way], median["loaded", way]
        print(f"{way:<24}{quiet:>10,.0f}{loaded:>10,.0f}{loaded / quiet:>14.2f}{quiet / best_quiet:>18.2f}")
    print(f"a fair share beside {args.busy} other jobs: {1 / (1 + args.busy):.2f} of quiet")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cpus", type=int, default=1, help="CPUs the process is confined to")
    parser.add_argument("--load", action="store_true", help="quiet against beside --busy other jobs")
    parser.add_argument("--busy", type=int, default=2, help="other jobs beside the chunk under --load")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    (under_load if args.load else confined)(args)


if __name__ == "__main__":
    main()
