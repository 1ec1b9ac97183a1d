"""Threads against the CPUs a process may use: a chunk confined to fewer CPUs than the host has (as in a container
or a SLURM job), trained with torch's default of one thread per host core and with train.threads' default (the
CPUs it may use). Alternated, the median of --repeat runs each; prints samples/s and the ratio.

python benchmarks/threads.py [--cpus 1] [--repeat 3]
"""

import argparse
import copy
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from chunktrain.testing import TINY_PARAMS, new_project, write_params  # noqa: E402
from chunktrain.runner.processes import available_cpus  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cpus", type=int, default=1, help="CPUs the process is confined to")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    os.environ.pop("OMP_NUM_THREADS", None)
    os.sched_setaffinity(0, sorted(os.sched_getaffinity(0))[:args.cpus])
    params = copy.deepcopy(TINY_PARAMS)
    params["synthetic"].update(n_samples=50_000, n_features=16)
    params["model"]["args"]["hidden"] = [128, 128]
    params["train"].update(batch_size=128, chunks={"c1": {"from": "init", "epochs": 2}})
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
                rate[label].append(2 * 40_000 / (time.perf_counter() - started))
    median = {label: statistics.median(values) for label, values in rate.items()}
    print(f"{args.cpus} of {host} CPUs; auto gives {available_cpus()} thread(s), torch's default {host}")
    for label, value in median.items():
        print(f"{label:>10}: {value:,.0f} samples/s (median of {args.repeat})")
    print(f"auto / host cores: {median['auto'] / median['host cores']:.2f}")


if __name__ == "__main__":
    main()
