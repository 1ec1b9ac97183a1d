"""Metric files: written atomically, as a reader polling them during a chunk sees them."""

import json

import pytest

from chunktrain.metrics import epoch_metrics, write_json


def test_write_json_replaces_the_file_and_leaves_no_temp_file(tmp_path):
    path = tmp_path / "metrics/train/c1.json"
    write_json(path, {"epoch": 1})
    write_json(path, {"epoch": 2})
    assert json.loads(path.read_text()) == {"epoch": 2}
    assert [p.name for p in path.parent.iterdir()] == ["c1.json"]
    (tmp_path / "plain").touch()
    assert path.stat().st_mode == (tmp_path / "plain").stat().st_mode  # not mkstemp's 0600


def test_a_failed_write_keeps_the_previous_content(tmp_path):
    path = tmp_path / "c1.json"
    write_json(path, {"epoch": 1})
    with pytest.raises(TypeError):
        write_json(path, {"epoch": object()})  # not serialisable: fails before the rename
    assert json.loads(path.read_text()) == {"epoch": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["c1.json"]


def test_epoch_metrics_are_the_chunks_final_metrics_keys():
    record = {"epoch": 7, "train_loss": 0.5, "val_loss": 0.6, "lr": 0.01, "chunk": "c4"}
    assert epoch_metrics(record) == {"epoch": 7, "train_loss": 0.5, "val_loss": 0.6}
