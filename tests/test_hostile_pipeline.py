"""Hostile params.yaml through the commands a user types: DVC flags that skip stage plan, URLs and odd files as
data.source, `--ignore-errors`. Each asserts what lands on disk: no marker, no request, no output lost, one line."""

import http.server
import os
import threading

import pytest
import yaml

import train
from chunktrain.recipe.errors import PipelineError
from chunktrain.recipe.specs import ChunkSpec
from chunktrain.runner.trainer import ChunkFiles
from chunktrain.testing import ROOT, sha256

slow = pytest.mark.slow

# A shell command, and a path that climbs to the repo root: train@NAME's spec dep normalizes to data/params.json.
NAME = "x$(touch marker)/../../../params"


def outputs(project) -> dict:
    """Every file of every stage's outputs, git-tracked metrics/best.json included, by its sha256."""
    return {path: sha256(path) for folder in ("data", "metrics") for path in (project.path / folder).rglob("*")
            if path.is_file()}


def errors(output: str) -> list[str]:
    return [line for line in output.splitlines() if line.startswith("error: ")]


@pytest.mark.parametrize("stage", ["train@c1", "train@" + "x" * 64])
def test_a_chunks_files_from_its_stage_name_are_dvc_yamls(stage):
    do = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]["train"]["do"]
    name = stage.removeprefix("train@")
    files = ChunkFiles.of(name)
    assert {str(files.spec), str(files.out), str(files.metrics)} == {
        path.replace("${key}", name) for path in do["deps"] + do["outs"] if "${key}" in path}
    assert {str(files.parent(ChunkSpec.model_construct(parent="c0"))), str(files.dataset)} == {
        path.replace("${item.from}", "c0") for path in do["deps"] if path.startswith("data/") and "${key}" not in path}
    assert "${" not in do["cmd"] and '"$DVC_STAGE"' in do["cmd"]


@pytest.mark.parametrize("stage", [f"train@{NAME}", "train@c1;touch x", "train@", "evaluate", "c1", "train@init"])
def test_a_stage_name_plan_would_refuse_is_one_line_before_any_file(stage):
    with pytest.raises(PipelineError, match=r"^stage '.*' is not train@<chunk> with a chunk name matching"):
        train.main([stage])


@slow
@pytest.mark.parametrize("flags", [["--downstream", "train@c1"], ["-f", "-s", f"train@{NAME}"],
                                   ["--ignore-errors"], ["-f", "--ignore-errors"]],
                         ids=["--downstream", "-f -s", "--ignore-errors", "-f --ignore-errors"])
def test_no_dvc_flag_lets_a_chunk_name_reach_a_shell_or_lose_an_output(project, flags):
    before = outputs(project)
    project.edit_params(lambda params: params["train"]["chunks"].update({NAME: {"from": "c1", "epochs": 1}}))

    result = project.run("dvc", "repro", *flags, check=False)

    assert not (project.path / "marker").exists(), "a chunk name ran a shell command"
    lines = errors(result.stdout)
    if "-s" in flags:  # DVC runs the command, whose chunk comes from $DVC_STAGE, not the command line
        assert result.returncode != 0
        assert len(lines) == 1 and lines[0].startswith("error: stage 'train@x$(touch")
        assert lines[0].endswith(" is not train@<chunk> with a chunk name matching [A-Za-z][A-Za-z0-9_-]{0,63}"
                                 " and not 'init'; run `dvc repro` (stage plan refuses such names)")
    elif "--ignore-errors" in flags:
        # DVC's --ignore-errors exits 0 by design (dvc/repo/reproduce.py raises only when on_error != "ignore"),
        # but plan's line is shown, and plan's specs persist, so no later stage sees a changed dep
        assert lines[0] == (f"error: params.yaml: train.chunks: name {NAME!r} must match"
                            " [A-Za-z][A-Za-z0-9_-]{0,63} and not be 'init'")
    else:  # --downstream skips plan; DVC stops at the chunk's missing spec
        assert result.returncode != 0
    assert outputs(project) == before


@pytest.fixture
def server():
    """A local HTTP server that records every request it gets."""
    requests = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            requests.append(self.path)
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b"a,y\n1,2\n")

        do_HEAD = do_GET  # noqa: N815

        def log_message(self, *args):
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", requests
    httpd.shutdown()


@slow
@pytest.mark.parametrize("scheme", ["http", "remote"])
def test_dvc_never_fetches_a_url_given_as_data_source(project, server, scheme):
    url, requests = server
    source = f"{url}/x.csv" if scheme == "http" else "remote://storage/x.csv"
    before = outputs(project)
    project.edit_params(lambda params: params["data"].update(source=source))

    project.dvc("status")
    result = project.run("dvc", "repro", check=False)

    assert requests == []
    assert result.returncode != 0
    assert errors(result.stdout) == [f"error: params.yaml: data.source: {source!r} is a URL; DVC would fetch it."
                                     " Bring the file into the repo with `dvc import-url URL data/own/FILE` and give"
                                     " that path"]
    assert outputs(project) == before


@slow
@pytest.mark.parametrize("make, message", [
    (lambda path: os.mkfifo(path), "is not a regular file (a FIFO, a device, ...)"),
    (lambda path: path.symlink_to("/dev/zero"), "links to '/dev/zero', outside the repo; copy the file in"
                                                " (and `dvc add` it)"),
    (lambda path: path.mkdir(), "is a directory, not a file"),
    (lambda path: None, "not found"),
], ids=["a FIFO", "a link to /dev/zero", "a directory", "missing"])
def test_a_source_that_is_no_regular_file_in_the_repo_stops_dvc_repro_in_plan(project, make, message):
    (project.path / "data/own").mkdir()
    make(project.path / "data/own/x.csv")
    before = outputs(project)
    project.edit_params(lambda params: params["data"].update(source="data/own/x.csv"))

    result = project.run("timeout", "120", "dvc", "repro", check=False)

    assert result.returncode not in (0, 124), result.stdout  # 124: timed out, a hang
    assert errors(result.stdout) == [f"error: data.source: 'data/own/x.csv' {message}"]
    assert outputs(project) == before


@slow
@pytest.mark.xfail(strict=True, reason="DVC deletes a stage's outs before it checks its deps or runs its command"
                   " (dvc/stage/__init__.py Stage.run: remove_outs, then run_stage's save_deps), and no DVC check"
                   " keeps a ${key} out path inside its folder: only stage plan refuses such a name")
@pytest.mark.parametrize("flags", [["--downstream", "train@c1"], ["--ignore-errors"]])
def test_a_chunk_name_climbing_out_of_its_folder_deletes_nothing_when_a_flag_skips_plan(project, flags):
    victims = [project.path.parent / "victim.pt", project.path.parent / "victim.json"]  # outside the repo
    for victim in victims:
        victim.write_text("must survive\n")
    # data/checkpoints/../../../victim.pt and metrics/train/../../../victim.json
    project.edit_params(lambda params: params["train"]["chunks"].update({"../../../victim": {"from": "c1",
                                                                                             "epochs": 1}}))
    project.run("dvc", "repro", *flags, check=False)
    assert all(victim.is_file() for victim in victims)


@slow
def test_ignore_errors_after_a_failed_generate_loses_nothing_dvc_checkout_cannot_restore(project):
    """DVC's --ignore-errors runs every later stage on what a failed one left: it deletes their outputs from the
    workspace and exits 0. Documented in docs/errors.md; here: the line is shown and everything comes back."""
    kept = {path: digest for path, digest in outputs(project).items() if "plan" not in path.parts}
    (project.path / "data/own").mkdir()
    (project.path / "data/own/t.csv").write_text("a,b,y\n" + "".join(f"{i},{i % 7},{i}\n" for i in range(99))
                                                 + "5,1,\n")
    project.edit_params(lambda params: params["data"].update(source="data/own/t.csv"))

    result = project.run("dvc", "repro", "--ignore-errors", check=False)

    assert result.returncode == 0  # DVC's choice for --ignore-errors (dvc/repo/reproduce.py)
    assert [line.split(";")[0] for line in errors(result.stdout)] == [
        "error: data/own/t.csv: target column 'y' has 1 missing value(s), the first in row 99"]
    project.dvc("checkout")
    project.run("git", "checkout", "metrics/best.json")
    assert {path: digest for path, digest in outputs(project).items() if path in kept} == kept


def test_shell_metacharacters_in_slurm_settings_reach_sbatch_and_srun_as_one_argument_each():
    """A partition, an account or extra arguments with `;`, `$(...)` or a newline (probes round three, kept): each
    is one argument of sbatch (no shell reads them), and srun's are quoted in the job's script."""
    import shlex

    from chunktrain.runner import slurm
    from chunktrain.runner.settings import SlurmParams

    evil = "x; touch PWNED $(touch PWNED2)\nrm -rf ~"
    settings = SlurmParams(partition=evil, account=evil, sbatch_args=[f"--comment={evil}"], srun_args=[evil])
    args = slurm.sbatch_args(settings, 1, "train@c1", ROOT / "logs")
    assert {f"--partition={evil}", f"--account={evil}", f"--comment={evil}"} <= set(args)
    script = slurm.job_script(settings, ["python", "-m", "chunktrain.runner.trainer", "c1"], nproc=1)
    srun = script.split("exec ", 1)[1]
    assert shlex.split(srun)[3] == evil  # srun --ntasks-per-node=1 --kill-on-bad-exit=1 <evil> python ...
