"""`python -m layerforge train`: the tutorial models train end to end on the bundled MNIST."""
import subprocess
import sys

import numpy as np
import pytest

import layerforge as lf
from layerforge import train


def test_mlp_learns_on_bundled_mnist(tmp_path):
    lines = []
    out = train.train(model="mlp", epochs=1, seed=3, save=str(tmp_path / "w.npz"), progress=False,
                      log=lines.append)
    assert out["test_accuracy"] > 0.8, lines  # one epoch of 4,000 images: about 0.89
    h = out["history"][0]
    assert h["loss"] < 1.0 and h["seconds"] > 0
    assert any(line.startswith("final test accuracy") for line in lines)
    saved = np.load(tmp_path / "w.npz")
    fresh = train.build_model("mlp")
    fresh.load_state_dict({k: saved[k] for k in saved.files})  # the checkpoint loads into a new model


@pytest.mark.parametrize("model", ["cnn", "lstm", "transformer"])
def test_every_model_takes_steps(model):
    lf.manual_seed(0)
    out = train.train(model=model, epochs=1, max_steps=3, batch_size=8, progress=False, log=lambda s: None)
    assert np.isfinite(out["history"][0]["loss"])


def test_cnn_loss_falls_within_seconds():
    lines = []
    out = train.train(model="cnn", epochs=2, max_steps=40, seed=1, progress=False, log=lines.append)
    first, second = out["history"]
    assert second["loss"] < first["loss"] < 2.3, lines  # 2.3 = ln(10), the loss of a uniform guess


def test_cli_help_and_bad_arguments():
    res = subprocess.run([sys.executable, "-m", "layerforge", "train", "--help"], capture_output=True, text=True)
    assert res.returncode == 0 and "--model" in res.stdout and "--optimizer" in res.stdout
    res = subprocess.run([sys.executable, "-m", "layerforge", "train", "--epochs", "0"], capture_output=True,
                         text=True)
    assert res.returncode != 0 and "--epochs must be >= 1" in res.stderr
    with pytest.raises(ValueError, match="unknown model"):
        train.build_model("resnet")
