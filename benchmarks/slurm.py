"""What train.launcher slurm costs per chunk: the wall time of a tiny chunk stage through SLURM minus the same
stage run here, and their ratio, measured in turn in this run (the median of --repeats each).

On a cluster's login node (sbatch on PATH, the folder shared with the nodes), it submits to that cluster:
`python benchmarks/slurm.py --partition debug`. With --local-cluster it starts the tests' one-node SLURM on
127.0.0.1 (tests/slurm_cluster.py, Debian's slurm-wlm and munge, as root) and stops it at the end.
"""

import argparse
import copy
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

from bench import stage_process  # noqa: E402
from chunktrain.testing import TINY_PARAMS, Project, new_project, project_env  # noqa: E402


def timed(project: Project, params: dict) -> float:
    """Seconds of stage train@c1, run as dvc.yaml runs it, under `params` (stage plan writes train.launcher to
    data/plan/run.json, which the runner reads as the chunk starts; no stage depends on it)."""
    project.params = params
    project.plan()
    project.checkpoint("c1").unlink(missing_ok=True)
    started = time.perf_counter()
    subprocess.run(stage_process("train@c1"), cwd=project.root, env=project_env(), check=True,
                   stdout=subprocess.DEVNULL)
    return time.perf_counter() - started


def measure(folder: Path, repeats: int, slurm: dict) -> dict:
    params = copy.deepcopy(TINY_PARAMS)
    params["train"]["chunks"] = {"c1": {"from": "init", "epochs": 1}}
    project = new_project(folder, params, git=False)
    project.generate()
    project.init()
    via_slurm = {**params, "train": {**params["train"], "launcher": "slurm", "slurm": slurm}}
    launchers = {"local": params, "slurm": via_slurm}
    times: dict[str, list[float]] = {"local": [], "slurm": []}
    for repeat in range(repeats):
        for launcher in ("local", "slurm") if repeat % 2 == 0 else ("slurm", "local"):  # which goes first alternates
            times[launcher].append(timed(project, launchers[launcher]))
    local, via_slurm = (statistics.median(times[name]) for name in ("local", "slurm"))
    return {"repeats": repeats, "local_s": round(local, 2), "slurm_s": round(via_slurm, 2),
            "overhead_s": round(via_slurm - local, 2), "ratio": round(via_slurm / local, 2),
            "all_s": {name: [round(t, 2) for t in values] for name, values in times.items()}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--local-cluster", action="store_true", help="start the tests' SLURM on 127.0.0.1 for it")
    parser.add_argument("--partition", help="train.slurm.partition (default: the cluster's default partition)")
    args = parser.parse_args()
    slurm = {"partition": args.partition} if args.partition else {}
    # The chunk's folder must be one the nodes share: a temp folder beside the repo, not /tmp, on a cluster.
    with tempfile.TemporaryDirectory(dir=None if args.local_cluster else ROOT.parent) as temp:
        cluster = None
        if args.local_cluster:
            from slurm_cluster import require_slurm, start_cluster
            require_slurm()
            cluster = start_cluster(Path(temp) / "cluster")
            os.environ["SLURM_CONF"] = str(cluster.conf)
        elif not shutil.which("sbatch"):
            sys.exit("benchmarks/slurm.py: no sbatch here; run it on a cluster's login node, or with --local-cluster")
        try:
            result = measure(Path(temp) / "chunk", args.repeats, slurm)
        finally:
            if cluster:
                from slurm_cluster import stop_cluster
                stop_cluster(cluster)
    print(json.dumps(result, indent=1))
    print(f"submission overhead per chunk: {result['overhead_s']:+.2f} s ({result['slurm_s']:.2f} s through SLURM,"
          f" {result['local_s']:.2f} s here, ratio {result['ratio']:.2f}; medians of {args.repeats})")


if __name__ == "__main__":
    main()
