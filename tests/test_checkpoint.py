import hashlib
import json
import os
import time
import zipfile
from pathlib import Path

import pytest
import torch

from chunktrain import checkpoint as ckpt
from chunktrain.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from chunktrain.model import build_model, build_optimizer, model_config
from chunktrain.testing import assert_same_state, sha256

CONFIG = model_config(n_features=3, hidden=[5], optimizer="adam")


def make(seed: int = 0) -> dict:
    torch.manual_seed(seed)
    model = build_model(CONFIG)
    optimizer = build_optimizer(model, CONFIG)
    model(torch.randn(4, 3)).sum().backward()
    optimizer.step()  # so the optimizer has moment tensors to save
    return ckpt.make_checkpoint(model, optimizer, epoch=3, loss=0.5, model_config=CONFIG, chunk="c1",
                                train_settings={"epochs": 3, "lr": 0.001, "batch_size": 8, "weight_decay": 0.0},
                                parent="init", parent_sha256="0" * 64, global_step=75,
                                history=[{"epoch": 3, "train_loss": 0.5, "val_loss": 0.6, "lr": 0.001, "chunk": "c1"}])


def test_round_trip_restores_every_key(tmp_path):
    original = make()
    save_checkpoint(original, tmp_path / "c1.pt")
    loaded = load_checkpoint(tmp_path / "c1.pt", rebuild="-")
    assert set(loaded) == set(ckpt.KEYS)
    for key, value in original[ckpt.MODEL_STATE].items():
        assert torch.equal(loaded[ckpt.MODEL_STATE][key], value)
    saved_moments = original[ckpt.OPTIMIZER_STATE]["state"][0]["exp_avg"]
    assert torch.equal(loaded[ckpt.OPTIMIZER_STATE]["state"][0]["exp_avg"], saved_moments)
    assert torch.equal(loaded[ckpt.RNG_STATE]["torch"], original[ckpt.RNG_STATE]["torch"])
    for key in (ckpt.EPOCH, ckpt.LOSS, ckpt.MODEL_CONFIG, ckpt.CHUNK, ckpt.PARENT, ckpt.HISTORY, ckpt.VERSION):
        assert loaded[key] == original[key]


def test_loads_with_plain_torch_load_weights_only(tmp_path):
    save_checkpoint(make(), tmp_path / "c1.pt")
    loaded = torch.load(tmp_path / "c1.pt", weights_only=True)
    assert loaded["epoch"] == 3 and "model_state_dict" in loaded and "optimizer_state_dict" in loaded


@pytest.mark.parametrize("mmap", [True, False])
def test_a_checkpoint_saved_without_crc32_loads_with_and_without_mmap(tmp_path, mmap):
    original = make()
    save_checkpoint(original, tmp_path / "c1.pt")
    assert {info.CRC for info in zipfile.ZipFile(tmp_path / "c1.pt").infolist()} == {0}  # torch computed none
    assert torch.serialization.get_crc32_options()  # and its setting is back for every other save
    loaded = torch.load(tmp_path / "c1.pt", weights_only=True, mmap=mmap)
    assert_same_state(loaded, original)


def test_a_failed_save_restores_the_crc32_setting(tmp_path, monkeypatch):
    monkeypatch.setattr(torch, "save", lambda obj, file: (_ for _ in ()).throw(OSError("disk full")))
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(make(), tmp_path / "c1.pt")
    assert torch.serialization.get_crc32_options()


def test_same_checkpoint_gives_same_bytes_whatever_the_file_name(tmp_path):
    save_checkpoint(make(), tmp_path / "a.pt")
    save_checkpoint(make(), tmp_path / "b.pt")
    assert sha256(tmp_path / "a.pt") == sha256(tmp_path / "b.pt")
    save_checkpoint(make(seed=1), tmp_path / "c.pt")
    assert sha256(tmp_path / "c.pt") != sha256(tmp_path / "a.pt")


def test_a_checkpoint_gets_the_usual_file_mode(tmp_path):
    save_checkpoint(make(), tmp_path / "c1.pt")
    mask = os.umask(0)
    os.umask(mask)
    assert (tmp_path / "c1.pt").stat().st_mode & 0o777 == 0o666 & ~mask


def test_a_failed_write_leaves_the_old_file_and_no_temp_file(tmp_path, monkeypatch):
    path = tmp_path / "c1.pt"
    save_checkpoint(make(), path)
    before = sha256(path)

    def crash_midway(obj, file):
        file.write(b"partial bytes")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", crash_midway)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(make(seed=1), path)
    assert sha256(path) == before
    assert [p.name for p in tmp_path.iterdir()] == ["c1.pt"]


def test_a_failed_first_write_leaves_no_file(tmp_path, monkeypatch):
    monkeypatch.setattr(torch, "save", lambda obj, file: (_ for _ in ()).throw(KeyboardInterrupt()))
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(make(), tmp_path / "c1.pt")
    assert list(tmp_path.iterdir()) == []


def test_missing_checkpoint_names_the_file_and_the_fix(tmp_path):
    with pytest.raises(CheckpointError, match=r"c1.pt not found; run `dvc repro train@c1`"):
        load_checkpoint(tmp_path / "c1.pt", rebuild="run `dvc repro train@c1`")


@pytest.mark.parametrize("damage", ["truncate", "garbage", "empty"])
def test_damaged_checkpoint_names_the_file_and_the_fix(tmp_path, damage):
    path = tmp_path / "c1.pt"
    save_checkpoint(make(), path)
    data = path.read_bytes()
    path.write_bytes({"truncate": data[: len(data) // 2], "garbage": b"not a checkpoint" * 100,
                      "empty": b""}[damage])
    with pytest.raises(CheckpointError, match=r"c1.pt is truncated or corrupt .*; run `dvc repro train@c1`"):
        load_checkpoint(path, rebuild="run `dvc repro train@c1`")


def test_unsafe_pickle_is_refused(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"epoch": 1, "payload": print}, path)  # a callable: weights_only refuses it
    with pytest.raises(CheckpointError, match="evil.pt is truncated or corrupt"):
        load_checkpoint(path, rebuild="-")


def test_other_format_or_missing_keys_are_refused(tmp_path):
    torch.save({"epoch": 1}, tmp_path / "old.pt")
    with pytest.raises(CheckpointError, match=r"old.pt is not a format-2 checkpoint \(found None\)"):
        load_checkpoint(tmp_path / "old.pt", rebuild="-")
    partial = {ckpt.VERSION: ckpt.FORMAT_VERSION, ckpt.EPOCH: 1}
    torch.save(partial, tmp_path / "partial.pt")
    with pytest.raises(CheckpointError, match="partial.pt lacks keys"):
        load_checkpoint(tmp_path / "partial.pt", rebuild="-")


def test_a_checkpoint_for_another_model_config_is_refused():
    other = model_config(n_features=3, hidden=[7], optimizer="adam")
    with pytest.raises(CheckpointError, match=r"built for another model config \(hidden: \[5\] in the file, \[7\] now\)"):
        ckpt.check_model_config(make(), other, "c1.pt")
    ckpt.check_model_config(make(), CONFIG, "c1.pt")


def test_bytes_do_not_depend_on_where_equal_values_came_from(tmp_path):
    """A resumed chunk mixes records loaded from a snapshot with fresh ones; its bytes must not change."""
    fresh = make()
    fresh[ckpt.HISTORY] = [{"epoch": e, "train_loss": 0.5, "chunk": "c1"} for e in (1, 2)]
    save_checkpoint(fresh, tmp_path / "fresh.pt")
    loaded = load_checkpoint(tmp_path / "fresh.pt", rebuild="-")
    mixed = make()
    mixed[ckpt.HISTORY] = loaded[ckpt.HISTORY][:1] + [{"epoch": 2, "train_loss": 0.5, "chunk": "c1"}]
    save_checkpoint(mixed, tmp_path / "mixed.pt")
    assert sha256(tmp_path / "mixed.pt") == sha256(tmp_path / "fresh.pt")


SETTINGS = {"epochs": 3, "lr": 0.001, "batch_size": 8, "weight_decay": 0.0}


def check_c1(checkpoint: dict, **change) -> None:
    expected = {"chunk": "c1", "parent": "init", "settings": SETTINGS, "model_config": CONFIG, **change}
    ckpt.check_lineage(checkpoint, "data/checkpoints/c1.pt", rebuild="run `dvc repro train@c1` to rebuild it",
                       **expected)


def test_a_checkpoint_that_params_would_have_produced_passes_the_lineage_check():
    check_c1(make())


@pytest.mark.parametrize("change, message", [
    ({"chunk": "c2"}, "chunk is 'c1' in the file, 'c2' in params.yaml"),
    ({"parent": "c0"}, "parent is 'init' in the file, 'c0' in params.yaml"),
    ({"settings": {**SETTINGS, "lr": 0.002}}, "lr is 0.001 in the file, 0.002 in params.yaml"),
    ({"settings": {**SETTINGS, "epochs": 4}}, "epochs is 3 in the file, 4 in params.yaml"),
    ({"model_config": {**CONFIG, "hidden": [7]}}, "hidden is [5] in the file, [7] in params.yaml"),
    ({"model_config": {**CONFIG, "optimizer": "sgd"}}, "optimizer is 'adam' in the file, 'sgd' in params.yaml"),
])
def test_a_checkpoint_params_would_not_have_produced_is_refused_in_one_line(change, message):
    with pytest.raises(CheckpointError) as raised:
        check_c1(make(), **change)
    assert str(raised.value) == (f"data/checkpoints/c1.pt does not match params.yaml: {message};"
                                 " run `dvc repro train@c1` to rebuild it")


def test_the_lineage_check_quotes_a_huge_recorded_value_briefly():
    checkpoint = make()
    checkpoint[ckpt.CHUNK] = "x" * 100_000
    with pytest.raises(CheckpointError) as raised:
        check_c1(checkpoint)
    assert len(str(raised.value)) < 300


def test_clean_up_deletes_a_dead_writers_temp_file_and_keeps_a_live_ones(tmp_path):
    live = tmp_path / f".c1.pt.{os.getpid()}.abc.tmp"  # this process is alive: its file is someone's write
    dead = tmp_path / ".c1.pt.999999999.abc.tmp"  # no such pid
    old = tmp_path / ".c1.pt.k2j3h4.tmp"  # the earlier naming, without a pid
    for path in (live, dead, old):
        path.write_bytes(b"partial")
    save_checkpoint(make(), tmp_path / "c1.pt")
    assert live.exists() and not dead.exists() and not old.exists()
    assert load_checkpoint(tmp_path / "c1.pt", rebuild="-")[ckpt.EPOCH] == 3


def hashed_file(tmp_path) -> tuple[Path, str]:
    """A file older than RACY_NS, its sha256 computed and recorded by file_sha256."""
    path = tmp_path / "c1.pt"
    path.write_bytes(b"checkpoint bytes")
    time.sleep(ckpt.RACY_NS / 1e9)
    digest = ckpt.file_sha256(path)
    assert digest == hashlib.sha256(b"checkpoint bytes").hexdigest()
    return path, digest


def no_reading(monkeypatch) -> None:
    def refuse(*args, **kwargs):
        raise AssertionError("file_sha256 read the file")

    monkeypatch.setattr(hashlib, "file_digest", refuse)


def test_file_sha256_trusts_its_record_while_the_file_is_unchanged(tmp_path, monkeypatch):
    path, digest = hashed_file(tmp_path)
    assert json.loads(ckpt.record_path(path).read_text())["sha256"] == digest
    no_reading(monkeypatch)
    assert ckpt.file_sha256(path) == digest


def test_an_in_place_edit_voids_the_record_even_with_the_mtime_put_back(tmp_path):
    path, _ = hashed_file(tmp_path)
    before = path.stat()
    with open(path, "r+b") as file:
        file.write(b"C")  # same size
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert path.stat().st_ctime_ns != before.st_ctime_ns
    assert ckpt.file_sha256(path) == hashlib.sha256(b"Checkpoint bytes").hexdigest()


def test_a_replaced_file_voids_the_record(tmp_path):
    path, _ = hashed_file(tmp_path)
    before = path.stat()
    other = tmp_path / "other"
    other.write_bytes(b"Checkpoint bytes")
    os.utime(other, ns=(before.st_atime_ns, before.st_mtime_ns))
    os.replace(other, path)  # what `dvc checkout` does: a new file with the same name
    assert ckpt.file_sha256(path) == hashlib.sha256(b"Checkpoint bytes").hexdigest()


@pytest.mark.parametrize("damage", [
    lambda recorded: b"",
    lambda recorded: b"not json \xff",
    lambda recorded: b"[" * 100_000,
    lambda recorded: json.dumps([recorded]).encode(),
    lambda recorded: json.dumps({**recorded, "sha256": "not a sha256"}).encode(),
    lambda recorded: json.dumps({"sha256": "0" * 64}).encode(),  # of no file
    lambda recorded: json.dumps({**recorded, "sha256": "0" * 64, "extra": 1}).encode(),
])
def test_a_damaged_record_is_ignored_and_replaced(tmp_path, damage):
    path, digest = hashed_file(tmp_path)
    ckpt.record_path(path).write_bytes(damage(json.loads(ckpt.record_path(path).read_text())))
    assert ckpt.file_sha256(path) == digest
    assert json.loads(ckpt.record_path(path).read_text())["sha256"] == digest


def test_a_file_changed_just_now_is_hashed_but_not_recorded(tmp_path):
    path = tmp_path / "c1.pt"
    path.write_bytes(b"checkpoint bytes")
    assert ckpt.file_sha256(path) == hashlib.sha256(b"checkpoint bytes").hexdigest()
    assert not ckpt.record_path(path).exists()


def test_a_record_that_cannot_be_written_costs_only_the_read(tmp_path):
    path = tmp_path / "c1.pt"
    path.write_bytes(b"checkpoint bytes")
    ckpt.record_path(path).mkdir()  # in the record's place: reading and writing it fail
    time.sleep(ckpt.RACY_NS / 1e9)
    assert ckpt.file_sha256(path) == ckpt.file_sha256(path) == hashlib.sha256(b"checkpoint bytes").hexdigest()
