"""Own tables through the stage scripts on temp paths: a classifier (CSV, string labels) and a regressor (parquet);
what they score, prediction and export."""

import copy
import json
import sys

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

import predict
from chunktrain.recipe import checkpoint as ckpt
from chunktrain.recipe.checkpoint import load_checkpoint
from chunktrain.recipe.splits import read_dataset
from chunktrain.prediction import load_model
from chunktrain.testing import TINY_PARAMS, Project, new_project, project_env, run
from tables import CLASSES, FEATURES, TARGET, own_params, write_table


@pytest.fixture(scope="module", params=["classification", "regression"])
def trained(request, tmp_path_factory):
    """An own table (CSV for the classifier, parquet for the regressor) through generate, init, c1..c3, evaluate.

    Built once per task: the tests only read it.
    """
    task, root = request.param, tmp_path_factory.mktemp(request.param)
    source = "tables/classes.csv" if task == "classification" else "tables/prices.parquet"
    frame = write_table(root / source, task)  # data.source is relative to the repo root, where stages run
    stages = new_project(root, own_params(copy.deepcopy(TINY_PARAMS), task, source), git=False)
    stages.generate()
    stages.init()
    for chunk in ("c1", "c2", "c3"):
        stages.train(chunk)
    stages.evaluate()
    return task, stages, frame


def test_a_classifier_and_a_regressor_train_on_own_tables(trained, capsys):
    task, stages, frame = trained
    best = json.loads((stages.root / "metrics/best.json").read_text())
    chunks = json.loads((stages.root / "metrics/chunks.json").read_text())
    if task == "classification":
        assert set(chunks["c3"]) >= {"test_cross_entropy", "test_accuracy"} and "test_mse" not in chunks["c3"]
        assert best["test_accuracy"] > 0.85 and best["val_loss"] < 0.5  # 5% of the labels are flipped at random
        reached = f"test accuracy {best['test_accuracy']:.3f}, cross-entropy {best['test_cross_entropy']:.3f}"
    else:
        variance = frame["price"].var()
        assert best["test_mse"] < 0.05 * variance  # in price units: the standardized target is scaled back
        assert best["test_mae"] ** 2 < best["test_mse"] * 2 and best["train_loss"] > 50 ** 2 / 4
        reached = f"test RMSE {best['test_mse'] ** 0.5:.1f} (noise std 50, target std {variance ** 0.5:.0f})"
    with capsys.disabled():
        print(f"\n{task}: best chunk {best['chunk']}: {reached}")
    transform = load_checkpoint(stages.checkpoint("c3"))[ckpt.TRANSFORM]
    assert transform["features"] == FEATURES[task]
    assert transform["labels"] == (CLASSES if task == "classification" else None)


def hand_prediction(checkpoint_path, frame: pd.DataFrame) -> np.ndarray:
    """What the checkpoint predicts, rebuilt from its keys alone: Linear/ReLU layers of model_config, the transform."""
    checkpoint = torch.load(checkpoint_path, weights_only=True)
    config, state, transform = checkpoint["model_config"], checkpoint["model_state_dict"], checkpoint["transform"]
    assert config["arch"] == "mlp"
    x = (frame[transform["features"]].to_numpy(np.float64) - transform["feature_mean"]) / transform["feature_std"]
    h = torch.tensor(x, dtype=torch.float32)
    n_layers = len(config["args"]["hidden"]) + 1
    for i in range(n_layers):
        h = h @ state[f"{2 * i}.weight"].T + state[f"{2 * i}.bias"]
        h = torch.relu(h) if i < n_layers - 1 else h
    assert h.shape[1] == config["outputs"]
    if transform["labels"] is None:
        return h[:, 0].double().numpy() * transform["target_std"] + transform["target_mean"]
    return torch.softmax(h.double(), dim=1).numpy()


def test_prediction_equals_a_hand_reconstruction_from_the_checkpoint(trained, tmp_path):
    task, stages, frame = trained
    new = frame.iloc[::-1].head(50).drop(columns=TARGET[task])  # another row order, no target column
    write_table(tmp_path / "new.csv", task, new)
    predict.main(["--checkpoint", str(stages.checkpoint("c2")), "--input", str(tmp_path / "new.csv"),
                  "--output", str(tmp_path / "out.parquet")])
    out = pd.read_parquet(tmp_path / "out.parquet")
    expected = hand_prediction(stages.checkpoint("c2"), new)
    assert out[list(new.columns)].equals(new.reset_index(drop=True))  # the input, rows in its order
    if task == "regression":
        np.testing.assert_allclose(out["prediction"], expected, rtol=1e-6)
        return
    probabilities = out[[f"proba_{label}" for label in CLASSES]].to_numpy()
    np.testing.assert_allclose(probabilities, expected, rtol=1e-6, atol=1e-9)
    assert out["prediction"].tolist() == [CLASSES[i] for i in expected.argmax(axis=1)]


def test_load_model_is_ready_to_use(trained):
    task, stages, frame = trained
    model = load_model(stages.checkpoint("c3"))
    assert not model.training and model.features == FEATURES[task] and model.task == task
    x = torch.tensor(frame[FEATURES[task]].to_numpy(np.float64))
    output = model(x)
    if task == "classification":
        assert model.labels == CLASSES and output.shape == (len(frame), 3)
        accuracy = (np.array(CLASSES)[output.argmax(dim=1).numpy()] == frame["species"]).mean()
        assert accuracy > 0.85
    else:
        assert output.shape == (len(frame),)
        assert ((output.numpy() - frame["price"]) ** 2).mean() < 0.05 * frame["price"].var()


def export(stages: Project, frame: pd.DataFrame, task: str, folder) -> tuple:
    """The c3 model exported by predict.py, rows of the table it was trained on, and the model's own output."""
    predict.main(["--checkpoint", str(stages.checkpoint("c3")), "--export", str(folder / "model.pt2")])
    x = frame[FEATURES[task]].to_numpy(np.float64, copy=True)[:77]  # a batch size the export never saw
    return folder / "model.pt2", x, load_model(stages.checkpoint("c3"))(torch.from_numpy(x)).numpy()


def test_the_exported_program_agrees_with_the_model_and_names_its_features(trained, tmp_path):
    task, stages, frame = trained
    path, x, expected = export(stages, frame, task, tmp_path)
    extra = {"chunktrain.json": ""}
    program = torch.export.load(path, extra_files=extra)
    np.testing.assert_allclose(program.module()(torch.from_numpy(x)).numpy(), expected, rtol=1e-5, atol=1e-5)
    info = json.loads(extra["chunktrain.json"])
    assert (info["task"], info["features"], info["labels"]) == (
        task, FEATURES[task], CLASSES if task == "classification" else None)


ELSEWHERE = """
import sys
import numpy as np, torch
try:
    import chunktrain
    sys.exit("chunktrain is importable here")
except ImportError:
    pass
np.save(sys.argv[3], torch.export.load(sys.argv[1]).module()(torch.from_numpy(np.load(sys.argv[2]))).numpy())
"""


@pytest.mark.slow  # a fresh process takes seconds to import torch
def test_the_exported_program_runs_where_the_package_is_not_installed(trained, tmp_path):
    task, stages, frame = trained
    path, x, expected = export(stages, frame, task, tmp_path)
    np.save(tmp_path / "x.npy", x)
    env = {k: v for k, v in project_env().items() if k != "PYTHONPATH"}
    run([sys.executable, "-I", "-c", ELSEWHERE, str(path), "x.npy", "y.npy"], cwd=tmp_path, env=env)
    np.testing.assert_allclose(np.load(tmp_path / "y.npy"), expected, rtol=1e-5, atol=1e-5)


def test_splits_are_deterministic_from_the_seed_and_standardized_on_train(trained, tmp_path):
    task, stages, frame = trained
    params = yaml.safe_load(stages.params_path.read_text())
    write_table(tmp_path / params["data"]["source"], task, frame)
    again = new_project(tmp_path, params, git=False)
    again.generate()
    assert {path.name: path.read_bytes() for path in again.dataset.iterdir()} == {
        path.name: path.read_bytes() for path in stages.dataset.iterdir()}
    train = pd.read_parquet(stages.dataset / "train.parquet")
    np.testing.assert_allclose(train.drop(columns="y").mean().to_numpy(), 0, atol=1e-5)
    transform = read_dataset(stages.dataset).transform
    assert transform["feature_mean"][0] != pytest.approx(frame[FEATURES[task][0]].mean())  # train rows only
    assert len(train) == 540 and len(pd.read_parquet(stages.dataset / "test.parquet")) == 180
