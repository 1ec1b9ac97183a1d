"""End to end: real `dvc` in a temp git repo; what reruns after each edit, read from dvc.lock and `dvc status`."""

import json
import zlib

import pandas as pd
import pytest

from chunktrain.recipe.checkpoint import LINEAGE, load_checkpoint
from chunktrain.testing import ALL_STAGES, Project, new_project, ran, sha256

slow = pytest.mark.slow
MAIN_LINE = ("init", "c1", "c2", "c3")


def read_json(project: Project, path: str) -> dict:
    return json.loads((project.path / path).read_text())


def checkpoint_hashes(project: Project, names=MAIN_LINE) -> dict[str, str]:
    return {name: sha256(project.path / f"data/checkpoints/{name}.pt") for name in names}


def errors(output: str) -> list[str]:
    return [line for line in output.splitlines() if line.startswith("error: ")]


def test_first_repro_runs_every_stage_and_leaves_nothing_to_do(reproduced):
    project, output = reproduced
    assert ran(output) == ALL_STAGES
    assert set(project.lock()) == ALL_STAGES
    assert project.status() == {}


def test_each_chunks_metrics_hold_its_last_epochs_losses_and_test_scores(reproduced):
    project, _ = reproduced
    chunks = read_json(project, "metrics/chunks.json")
    assert list(chunks) == ["c1", "c2", "c3"]
    for chunk, epoch in [("c1", 2), ("c2", 4), ("c3", 6)]:
        train = read_json(project, f"metrics/train/{chunk}.json")
        assert train["epoch"] == epoch and train["train_loss"] > 0 and train["val_loss"] > 0
        assert chunks[chunk] == {**train, "test_mse": chunks[chunk]["test_mse"], "test_mae": chunks[chunk]["test_mae"],
                                 "checkpoint": f"data/checkpoints/{chunk}.pt", "platform": chunks[chunk]["platform"]}
        assert chunks[chunk]["test_mse"] > 0 and chunks[chunk]["test_mae"] > 0


def test_loss_keeps_falling_across_chunk_boundaries(reproduced):
    project, _ = reproduced
    curve = pd.read_csv(project.path / "metrics/curves.csv").dropna(subset=["val_loss"])  # a round's last step
    assert curve["branch"].unique().tolist() == ["c3"]
    assert curve["epoch"].tolist() == [1, 2, 3, 4, 5, 6]
    assert curve["step"].tolist() == [25, 50, 75, 100, 125, 150]  # 1600 rows in batches of 64
    assert curve["chunk"].tolist() == ["c1", "c1", "c2", "c2", "c3", "c3"]
    last_of_chunk = curve.groupby("chunk")["train_loss"].last()
    assert last_of_chunk["c1"] > last_of_chunk["c2"] > last_of_chunk["c3"]


def edit_params(edit):
    return lambda project: project.edit_params(edit)


def append_to(path: str, text: str = "\n# an edit\n"):
    return lambda project: project.append(project.path / path, text)


def write_bytecode(project: Project) -> None:
    """What Python writes when a stage imports src/chunktrain/recipe (unless PYTHONDONTWRITEBYTECODE is set)."""
    cache = project.path / "src/chunktrain/recipe/__pycache__"
    cache.mkdir(exist_ok=True)
    (cache / "loop.cpython-311.pyc").write_bytes(b"bytecode")


CHUNKS = {"train@c1", "train@c2", "train@c3"}


@pytest.mark.parametrize("edit, reruns", [
    pytest.param(edit_params(lambda p: p["train"]["chunks"]["c2"].update(lr=0.003)),
                 {"plan", "train@c2", "train@c3", "evaluate"}, id="a chunk's lr"),  # c3 takes c2's lr
    pytest.param(edit_params(lambda p: p["train"].update(snapshot_every_seconds=5)), {"plan"}, marks=slow,
                 id="snapshot_every_seconds"),
    pytest.param(edit_params(lambda p: p.update(seed=1)), ALL_STAGES, marks=slow, id="seed"),
    pytest.param(edit_params(lambda p: p["model"]["args"].update(hidden=[8])), {"plan", "init", *CHUNKS, "evaluate"},
                 marks=slow, id="model.args"),
    pytest.param(edit_params(lambda p: p["train"].update(grad_clip=1.0)), {"plan", *CHUNKS, "evaluate"},
                 marks=slow, id="train.grad_clip"),
    pytest.param(append_to("params.yaml", "# a comment\n"), set(), marks=slow, id="a comment in params.yaml"),
    # and evaluate once the checkpoints change: their lineage carries the code's id
    pytest.param(append_to("src/chunktrain/recipe/loop.py"), {"init", *CHUNKS, "evaluate"}, id="the recipe"),
    pytest.param(append_to("src/chunktrain/runner/slurm.py"), set(), id="the runner"),
    pytest.param(append_to("src/train.py"), set(), marks=slow, id="the train stage's command"),
    pytest.param(append_to("src/chunktrain/runner/settings.py"), {"plan"}, marks=slow,
                 id="the runner's settings plan checks"),
    pytest.param(append_to("src/predict.py"), set(), marks=slow, id="src/predict.py"),
    pytest.param(append_to("src/models/__init__.py"), {"init", *CHUNKS, "evaluate"}, marks=slow,
                 id="the user's model builders"),
    pytest.param(append_to("src/chunktrain/recipe/model.py"), {"init", *CHUNKS, "evaluate"}, marks=slow,
                 id="the model code"),
    pytest.param(append_to("src/chunktrain/evaluation.py"), {"evaluate"}, marks=slow, id="evaluation code"),
    pytest.param(write_bytecode, set(), marks=slow, id="a __pycache__ file"),
    pytest.param(edit_params(lambda p: p["train"]["chunks"].update(c4={"from": "c3", "epochs": 1})),
                 {"plan", "train@c4", "evaluate"}, marks=slow, id="appending a chunk"),
    pytest.param(edit_params(lambda p: p["train"]["chunks"].pop("c3")), {"plan", "evaluate"},
                 marks=slow, id="removing a chunk"),
])
def test_an_edit_reruns_exactly_the_stages_that_read_what_it_changed(project, edit, reruns):
    """What `dvc repro` reruns for the edit itself: plan (if params.yaml's values changed), then each stage whose
    own deps differ from dvc.lock once plan has rewritten the specs. A chunk whose checkpoint then changes reruns
    the chunks that start from it and evaluate in turn, as DVC does for any changed dependency."""
    edit(project)
    assert project.repro("plan") | set(project.status()) == reruns


@slow
def test_a_runner_edit_retrains_nothing_and_a_recipe_edit_retrains_every_chunk(project):
    """How a chunk runs (src/train.py, src/chunktrain/runner) is no stage's dep; what decides its bytes is."""
    code = load_checkpoint(project.path / "data/checkpoints/c3.pt")[LINEAGE]["code"]
    for path in ("src/train.py", "src/chunktrain/runner/trainer.py", "src/chunktrain/runner/processes.py"):
        project.append(project.path / path, "\n# a launcher fix\n")
    assert ran(project.dvc("repro")) == set() and project.status() == {}
    project.append(project.path / "src/chunktrain/recipe/loop.py", "\n# an edit to the loop\n")
    assert ran(project.dvc("repro")) == {"init", *CHUNKS, "evaluate"}  # init.pt records the recipe's id too
    assert load_checkpoint(project.path / "data/checkpoints/c3.pt")[LINEAGE]["code"] != code


@slow
def test_a_chunk_edit_reruns_it_its_descendants_and_evaluate_and_reverting_it_trains_nothing(project):
    original, lock, before = project.params, project.lock(), checkpoint_hashes(project)
    project.edit_params(lambda p: p["train"]["chunks"]["c2"].update(lr=0.003))
    assert project.repro() == {"plan", "train@c2", "train@c3", "evaluate"}
    after = checkpoint_hashes(project)
    assert [name for name in MAIN_LINE if after[name] != before[name]] == ["c2", "c3"]
    project.params = original
    assert ran(project.dvc("repro")) == {"plan"}  # plan (persist: no run cache) reruns; the rest are restored
    assert project.lock() == lock and checkpoint_hashes(project) == before


@slow
def test_repro_s_runs_one_stage_on_the_specs_plan_last_wrote(project):
    """`-s` runs no stage upstream of its target, as DVC documents: not plan, which carries an edit to the specs."""
    before = checkpoint_hashes(project)
    # c3 keeps its lr (it would otherwise take c2's), so its spec stays and it is only stale once c2.pt changes
    project.edit_params(lambda p: p["train"]["chunks"]["c2"].update(lr=0.003) or p["train"]["chunks"]["c3"].update(
        lr=0.01))
    assert project.status() == {"plan": [{"changed deps": {"params.yaml": {"train": "modified"}}}]}
    assert project.repro("-s", "train@c2") == set()  # c2's spec has not changed, so neither has the stage
    assert ran(project.dvc("repro", "-f", "-s", "train@c2")) == {"train@c2"}  # forced: on the spec it has
    assert load_checkpoint(project.path / "data/checkpoints/c2.pt")[LINEAGE]["spec"]["settings"]["lr"] == 0.01
    assert checkpoint_hashes(project) == before  # the old spec's exact bytes: c3 and evaluate still hold

    assert project.repro("plan") | project.repro("-s", "train@c2") == {"plan", "train@c2"}  # now on the new spec
    result = project.run("dvc", "repro", "-s", "evaluate", check=False)  # c3 was not retrained from the new c2
    assert result.returncode != 0
    assert errors(result.stdout) == ["error: data/checkpoints/c3.pt is stale: it was not trained from the current"
                                     " c2.pt; run `dvc repro train@c3` to rebuild it"]


@slow
def test_train_refuses_a_parent_checkpoint_of_another_seed_in_one_line(project, tmp_path, params):
    params["seed"] = 1
    other = new_project(tmp_path / "other-seed", params, git=False)
    other.generate()
    other.init()
    other.train("c1").replace(project.path / "data/checkpoints/c1.pt")
    result = project.run("dvc", "repro", "-f", "-s", "train@c2", check=False)
    assert result.returncode != 0
    assert errors(result.stdout) == ["error: data/checkpoints/c1.pt does not match params.yaml: init.seed is 1 in the"
                                     " file, 0 in params.yaml; run `dvc repro train@c1` to rebuild it"]
    assert "Traceback" not in result.stdout


@slow
def test_writing_into_an_output_in_place_leaves_the_cache_intact(project):
    """.dvc/config's cache.type (reflink or copy, never a link): an output and its cache object are two files."""
    path = project.path / "data/checkpoints/c1.pt"
    (md5,) = [out["md5"] for out in project.lock()["train@c1"]["outs"] if out["path"] == "data/checkpoints/c1.pt"]
    cached = project.path / ".dvc/cache/files/md5" / md5[:2] / md5[2:]
    with open(path, "r+b") as file:  # as a user or a tool might, with no `dvc unprotect` first
        file.seek(200)
        file.write(b"hand edit")
    assert sha256(path) != sha256(cached)
    assert project.status()["train@c1"] == [{"changed outs": {"data/checkpoints/c1.pt": "modified"}}]
    project.dvc("checkout", "--force", "data/checkpoints/c1.pt")  # and can restore the cached bytes
    assert sha256(path) == sha256(cached)


@pytest.fixture(scope="module")
def branched(reproduced, tmp_path_factory) -> tuple[Project, dict, set]:
    """The reproduced pipeline plus c2_slow, a branch from c1 at another lr, reproduced:
    (project, the main line's checkpoint hashes before, the stages that reran)."""
    project = reproduced[0].copy(tmp_path_factory.mktemp("branched") / "repo")
    before = checkpoint_hashes(project)
    project.edit_params(lambda p: p["train"]["chunks"].update(c2_slow={"from": "c1", "epochs": 2, "lr": 0.001}))
    return project, before, project.repro()


@slow
def test_a_branch_trains_alone_from_the_shared_parent(branched):
    project, before, reran = branched
    assert reran == {"plan", "train@c2_slow", "evaluate"}
    assert checkpoint_hashes(project) == before
    c2_slow = load_checkpoint(project.path / "data/checkpoints/c2_slow.pt")
    assert c2_slow[LINEAGE]["parent"] == load_checkpoint(project.path / "data/checkpoints/c1.pt")[LINEAGE]["id"]


@slow
def test_metrics_show_the_chunk_with_the_lowest_val_loss_of_every_branch(branched):
    project, _, _ = branched
    (workspace,) = json.loads(project.dvc("metrics", "show", "--json")).values()
    assert list(workspace["data"]) == ["metrics/best.json"]
    best = workspace["data"]["metrics/best.json"]["data"]
    chunks = read_json(project, "metrics/chunks.json")
    assert list(chunks) == ["c1", "c2", "c3", "c2_slow"]
    scores = {key: value for key, value in chunks[best["chunk"]].items() if key != "platform"}  # chunks.json's alone
    assert best == {"chunk": min(chunks, key=lambda name: chunks[name]["val_loss"]), **scores}


@slow
def test_plots_show_one_loss_chart_and_one_lr_chart_of_every_branch(branched):
    project, _, _ = branched
    shown = json.loads(project.dvc("plots", "show", "--json"))["data"]
    rows = {plot_id: [row for plot in plots for row in plot["content"]["data"]["values"]]
            for plot_id, plots in shown.items()}
    assert sorted(rows) == ["loss", "lr"]
    for plots in shown.values():  # both charts plot over the global step
        assert all("toNumber(datum['step'])" in json.dumps(plot["content"]) for plot in plots)
    chunks = {(row["branch"], int(row["step"])): row["chunk"] for row in rows["loss"] if row[row["field"]]}
    lineages = {"c3": ["c1", "c1", "c2", "c2", "c3", "c3"], "c2_slow": ["c1", "c1", "c2_slow", "c2_slow"]}
    assert chunks == {(branch, 25 * epoch): chunk for branch, lineage in lineages.items()  # 25 steps an epoch
                      for epoch, chunk in enumerate(lineage, 1)}
    assert {row["field"] for row in rows["loss"]} == {"train_loss", "val_loss"}
    lrs = {(row["branch"], int(row["step"])): float(row["lr"]) for row in rows["lr"]}
    assert sorted(step for branch, step in lrs if branch == "c3") == list(range(1, 151))  # every step
    assert [lrs[("c2_slow", step)] for step in (1, 50, 51, 100)] == [0.01, 0.01, 0.001, 0.001]
    assert {lrs[("c3", step)] for step in range(1, 151)} == {0.01}


def png_pixels(path) -> bytes:
    """A PNG's decompressed scanlines (enough to tell a drawn chart from a blank image)."""
    data, pixels, at = path.read_bytes(), b"", 8
    while at < len(data):
        length, kind = int.from_bytes(data[at:at + 4], "big"), data[at + 4:at + 8]
        pixels += data[at + 8:at + 8 + length] if kind == b"IDAT" else b""
        at += 12 + length
    return zlib.decompress(pixels)


@slow
def test_make_plots_draws_every_chart_offline_as_png_svg_and_one_page(branched, tmp_path):
    """src/plots.py (make plots) renders what dvc plots show would, with no network: no script is fetched."""
    project = branched[0].copy(tmp_path / "repo")
    project.run("python", "src/plots.py")
    out = project.path / "metrics/plots"
    assert sorted(path.name for path in out.iterdir()) == ["index.html", "loss.png", "loss.svg", "lr.png", "lr.svg"]
    for name in ("loss", "lr"):
        assert len(set(png_pixels(out / f"{name}.png"))) > 50  # drawn: lines, labels, legend, not one colour
        svg = (out / f"{name}.svg").read_text()
        assert svg.count("<path") > 10 and all(f">{chunk}<" in svg for chunk in ("c1", "c2", "c3", "c2_slow"))
    page = (out / "index.html").read_text()
    assert "<script src" not in page  # Vega inlined
    assert all(title in page for title in ("Train and val loss over", "Learning rate over"))  # both charts
