"""The checkpoint: atomic, byte-deterministic save; safe load with one-line errors; lineage ids and their checks."""

import os
import zipfile

import pytest
import torch

from chunktrain.recipe import checkpoint as ckpt
from chunktrain.recipe.checkpoint import (CheckpointError, check_lineage, code_id, lineage, load_checkpoint,
                                        save_checkpoint)
from chunktrain.params import Params, plan
from chunktrain.recipe.model import build_model, build_optimizer
from chunktrain.testing import TINY_PARAMS, assert_same_state, sha256

CONFIG = {"arch": "mlp", "args": {"hidden": [5]}, "task": "regression", "inputs": 3, "outputs": 1,
          "optimizer": "adam", "decay_params": "matrices"}
SPECS = plan(Params.model_validate(TINY_PARAMS))
INIT, C1, C2 = SPECS["init.json"], SPECS["train/c1.json"], SPECS["train/c2.json"]
PARENT, DATASET, CODE = "a" * 64, "d" * 64, "c" * 64


def make(seed: int = 0) -> dict:
    """A checkpoint of chunk c1 (TINY_PARAMS) with optimizer moments to save."""
    torch.manual_seed(seed)
    model = build_model(CONFIG)
    optimizer = build_optimizer(model, CONFIG)
    model(torch.randn(4, 3)).sum().backward()
    optimizer.step()
    return ckpt.make_checkpoint(model, optimizer, epoch=3, loss=0.5, model_config=CONFIG,
                                lineage=lineage(C1, PARENT, DATASET, CODE), global_step=75,
                                history=[{"epoch": 3, "step": 75, "train_loss": 0.5, "val_loss": 0.6, "lr": 0.001,
                                          "chunk": "c1"}],
                                transform={"task": "regression", "features": ["x0", "x1", "x2"]})


def test_round_trip_restores_every_key(tmp_path):
    original = make()
    save_checkpoint(original, tmp_path / "c1.pt")
    loaded = load_checkpoint(tmp_path / "c1.pt")
    assert set(loaded) == {*ckpt.KEYS, ckpt.DIGEST}
    assert_same_state(loaded, original)
    for key in set(ckpt.KEYS) - {ckpt.MODEL_STATE, ckpt.OPTIMIZER_STATE, ckpt.RNG_STATE}:
        assert loaded[key] == original[key], key


@pytest.mark.parametrize("mmap", [True, False])
def test_a_checkpoint_loads_with_plain_torch_load_weights_only(tmp_path, mmap):
    original = make()
    save_checkpoint(original, tmp_path / "c1.pt")
    assert zipfile.ZipFile(tmp_path / "c1.pt").testzip() is None  # every record's CRC-32 written and right
    assert_same_state(torch.load(tmp_path / "c1.pt", weights_only=True, mmap=mmap), original)


def test_same_checkpoint_gives_same_bytes_whatever_the_file_name(tmp_path):
    save_checkpoint(make(), tmp_path / "a.pt")
    save_checkpoint(make(), tmp_path / "b.pt")
    assert sha256(tmp_path / "a.pt") == sha256(tmp_path / "b.pt")
    save_checkpoint(make(seed=1), tmp_path / "c.pt")
    assert sha256(tmp_path / "c.pt") != sha256(tmp_path / "a.pt")


def test_bytes_do_not_depend_on_where_equal_values_came_from(tmp_path):
    """A resumed chunk mixes records loaded from a snapshot with fresh ones; its bytes must not change."""
    fresh = make()
    fresh[ckpt.HISTORY] = [{"epoch": e, "step": 25 * e, "train_loss": 0.5, "chunk": "c1"} for e in (1, 2)]
    save_checkpoint(fresh, tmp_path / "fresh.pt")
    mixed = make()
    mixed[ckpt.HISTORY] = load_checkpoint(tmp_path / "fresh.pt")[ckpt.HISTORY][:1] + [
        {"epoch": 2, "step": 50, "train_loss": 0.5, "chunk": "c1"}]
    save_checkpoint(mixed, tmp_path / "mixed.pt")
    assert sha256(tmp_path / "mixed.pt") == sha256(tmp_path / "fresh.pt")


def test_a_checkpoint_gets_the_usual_file_mode(tmp_path):
    save_checkpoint(make(), tmp_path / "c1.pt")
    (tmp_path / "plain").touch()
    assert (tmp_path / "c1.pt").stat().st_mode == (tmp_path / "plain").stat().st_mode  # not mkstemp's 0600


def test_a_failed_write_leaves_the_old_file_and_no_temp_file(tmp_path, monkeypatch):
    path = tmp_path / "c1.pt"
    save_checkpoint(make(), path)
    before = sha256(path)

    def crash_midway(obj, file):
        file.write(b"partial bytes")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", crash_midway)
    with pytest.raises(OSError, match=f"^cannot write {path}: disk full$"):
        save_checkpoint(make(seed=1), path)
    assert sha256(path) == before
    assert [p.name for p in tmp_path.iterdir()] == ["c1.pt"]
    assert torch.serialization.get_crc32_options()


def test_an_interrupted_first_write_leaves_no_file(tmp_path, monkeypatch):
    monkeypatch.setattr(torch, "save", lambda obj, file: (_ for _ in ()).throw(KeyboardInterrupt()))
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(make(), tmp_path / "c1.pt")
    assert list(tmp_path.iterdir()) == []


def test_a_save_deletes_a_dead_writers_temp_file_and_keeps_a_live_ones(tmp_path):
    live = tmp_path / f".c1.pt.{os.getpid()}.abc.tmp"  # this process is alive: its file is someone's write
    dead = tmp_path / ".c1.pt.999999999.abc.tmp"  # no such pid
    for path in (live, dead):
        path.write_bytes(b"partial")
    save_checkpoint(make(), tmp_path / "c1.pt")
    assert live.exists() and not dead.exists()


def _damage(path, how: str) -> None:
    data = path.read_bytes()
    path.write_bytes({"truncate": data[: len(data) // 2], "garbage": b"not a checkpoint" * 100, "empty": b""}[how])


@pytest.mark.parametrize("prepare, problem", [
    (lambda path: None, "not found"),
    (lambda path: (save_checkpoint(make(), path), _damage(path, "truncate")), r"is truncated or corrupt \(.+\)"),
    (lambda path: (save_checkpoint(make(), path), _damage(path, "garbage")), r"is truncated or corrupt \(.+\)"),
    (lambda path: (save_checkpoint(make(), path), _damage(path, "empty")), r"is truncated or corrupt \(.+\)"),
    (lambda path: torch.save({"epoch": 1, "payload": print}, path), "is truncated or corrupt"),  # unsafe pickle
    (lambda path: torch.save({"epoch": 1}, path), r"is not a format-6 checkpoint \(found None\)"),
    (lambda path: torch.save({**make(), ckpt.VERSION: 5}, path), r"is not a format-6 checkpoint \(found 5\)"),
    (lambda path: save_checkpoint({**make(), ckpt.BEST: {ckpt.EPOCH: 2, ckpt.MODEL_STATE: {}}}, path),
     "names a best round that is not one of its chunk's rounds"),
    (lambda path: torch.save({ckpt.VERSION: ckpt.FORMAT_VERSION, ckpt.EPOCH: 1}, path), r"lacks keys \['"),
])
def test_a_bad_checkpoint_is_one_line_naming_the_file_and_the_fix(tmp_path, prepare, problem):
    path = tmp_path / "c1.pt"
    prepare(path)
    fix = "; run `dvc repro train@c1` to rebuild it"
    with pytest.raises(CheckpointError, match=rf"^{path} {problem}.*{fix}$") as raised:
        load_checkpoint(path, "train@c1")
    assert "\n" not in str(raised.value)


# Lineage: identity by recipe.

def test_the_same_recipe_gives_the_same_lineage_id():
    record = lineage(C1, PARENT, DATASET, CODE)
    assert record == lineage(C1, PARENT, DATASET, CODE)
    assert len(record["id"]) == 64 and record["chunk"] == "c1" and record["parent"] == PARENT
    assert lineage(INIT, None, DATASET, CODE)["chunk"] == "init"


def _with_lr(spec, lr):
    return spec.model_copy(update={"settings": spec.settings.model_copy(update={"lr": lr})})


@pytest.mark.parametrize("recipe", [
    (C1, "b" * 64, DATASET, CODE),  # another parent checkpoint
    (C1, None, DATASET, CODE),
    (_with_lr(C1, 0.02), PARENT, DATASET, CODE),  # another setting
    (C2.model_copy(update={"parent": "init"}), PARENT, DATASET, CODE),  # another chunk's spec
    (C1, PARENT, "e" * 64, CODE),  # another dataset
    (C1, PARENT, DATASET, "f" * 64),  # other code
])
def test_any_change_of_the_recipe_gives_another_lineage_id(recipe):
    assert lineage(*recipe)["id"] != lineage(C1, PARENT, DATASET, CODE)["id"]


def _refusal(checkpoint, **check) -> str:
    with pytest.raises(CheckpointError) as raised:
        check_lineage(checkpoint, "data/checkpoints/c1.pt", stage="train@c1", **check)
    return str(raised.value)


@pytest.mark.parametrize("check, problem", [
    ({"chunk": "c2", "spec": C2}, "was written by chunk 'c1', not c2"),
    ({"spec": _with_lr(C1, 0.02)}, "does not match params.yaml: settings.lr is 0.01 in the file, 0.02 in params.yaml"),
    ({"spec": C1.model_copy(update={"settings": C1.settings.model_copy(update={"epochs": 3})})},
     "does not match params.yaml: settings.epochs is 2 in the file, 3 in params.yaml"),
    ({"spec": INIT.model_copy(update={"seed": 1})},
     "does not match params.yaml: init.seed is 0 in the file, 1 in params.yaml"),
    ({"spec": INIT.model_copy(update={"model": INIT.model.model_copy(update={"args": {"hidden": [8]}})})},
     "does not match params.yaml: init.model.args.hidden is [16] in the file, [8] in params.yaml"),
    ({"spec": INIT.model_copy(update={"model": INIT.model.model_copy(update={"decay_params": "all"})})},
     "does not match params.yaml: init.model.decay_params is 'matrices' in the file, 'all' in params.yaml"),
    ({"dataset_id": "e" * 64}, "was made from another dataset than data/dataset/ holds now"),
])
def test_a_checkpoint_another_recipe_made_is_refused_naming_what_differs(check, problem):
    matching = {"chunk": "c1", "spec": C1, "dataset_id": DATASET}
    check_lineage(make(), "c1.pt", stage="train@c1", **matching)
    check_lineage(make(), "c1.pt", stage="train@c1", **{**matching, "spec": INIT})  # as a parent: seed and model
    assert _refusal(make(), **{**matching, **check}) == (f"data/checkpoints/c1.pt {problem};"
                                                         " run `dvc repro train@c1` to rebuild it")


def test_the_parent_check_with_the_init_spec_ignores_the_parents_own_settings():
    parent = make()
    parent[ckpt.LINEAGE] = lineage(_with_lr(C1, 0.5), PARENT, DATASET, CODE)
    check_lineage(parent, "c1.pt", chunk="c1", spec=INIT, dataset_id=DATASET, stage="train@c1")
    assert "settings.lr is 0.5" in _refusal(parent, chunk="c1", spec=C1, dataset_id=DATASET)


def test_the_lineage_check_quotes_a_huge_recorded_value_briefly():
    checkpoint = make()
    checkpoint[ckpt.LINEAGE] = {**checkpoint[ckpt.LINEAGE], "chunk": "x" * 100_000}
    assert len(_refusal(checkpoint, chunk="c1", spec=C1, dataset_id=DATASET)) < 300


@pytest.fixture
def src(tmp_path):
    """A src/ folder with a script, a package and the file types found there."""
    for name, text in [("train.py", "import chunktrain"), ("chunktrain/__init__.py", ""),
                       ("chunktrain/recipe/loop.py", "A = 1"), ("chunktrain/recipe/deep/model.py", "B = 2"),
                       ("chunktrain/evaluation.py", "C = 3"), ("models/__init__.py", "")]:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    return tmp_path


CODE_DEPS = ("chunktrain/recipe", "models")


@pytest.mark.parametrize("edit, changes", [
    (lambda src: (src / "chunktrain/recipe/loop.py").write_text("A = 2"), True),
    (lambda src: (src / "chunktrain/recipe/deep/model.py").write_text("B = 3"), True),
    (lambda src: (src / "chunktrain/recipe/new.py").write_text(""), True),
    (lambda src: (src / "chunktrain/recipe/loop.py").rename(src / "chunktrain/recipe/steps.py"), True),
    (lambda src: (src / "train.py").write_text("import chunktrain  # why"), False),  # the runner's,
    (lambda src: (src / "models/my_net.py").write_text("def build(inputs, outputs): ..."), True),  # a user's builder
    (lambda src: (src / "chunktrain/evaluation.py").write_text("C = 4"), False),  # not a dep of this stage
    (lambda src: (src / "chunktrain/recipe/notes.txt").write_text("todo"), False),
    (lambda src: ((src / "chunktrain/recipe/__pycache__").mkdir(),
                  (src / "chunktrain/recipe/__pycache__/loop.cpython-312.pyc").write_bytes(b"\x00")), False),
])
def test_the_code_id_changes_with_any_python_file_under_the_stages_code_deps(src, edit, changes):
    before = code_id(src, *CODE_DEPS)
    edit(src)
    assert (code_id(src, *CODE_DEPS) != before) == changes
