"""Loading a trained model (aelab.load, Autoencoder.load_from_checkpoint): from a run folder or
its last.ckpt, for single and stacked runs, autoencoders and VAEs; the loaded model scores
the test set exactly as the run did (metrics.json's test MSE and BCE)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import aelab
from aelab.diagnostics.pixel import pixel_bce
from aelab.errors import CheckpointError
from aelab.stacked.sweep import main as stacked_main
from aelab.training import load as loading
from aelab.training.module import Autoencoder
from aelab.training.run import run

from conftest import TINY, compose_config

EPOCHS = ["trainer.max_epochs=2", "logger=none"]


def trained(folder: Path, *overrides: str) -> dict:
    result = run(compose_config([*TINY, *EPOCHS, *overrides], folder))
    assert result["status"] == "completed"
    return result


def scores_of(model: Autoencoder, folder: Path) -> tuple[float, float, dict]:
    """(MSE, BCE) of `model` on the run's test set, in [0, 1] pixel units; metrics.json."""
    data = aelab.load_data(folder)
    x = data.splits["test"]
    target = model.normalization.decode(x)
    pred = model.reconstruct(x, normalized=True)
    mse = float((pred - target).square().mean())
    return mse, float(pixel_bce(pred, target)), json.loads((folder / "metrics.json").read_text())


def test_a_run_folder_loads_without_its_data_and_scores_its_test_mse(tmp_path, monkeypatch):
    folder = tmp_path / "run"
    trained(folder, "normalization=standard", "activation=relu")  # statistics in the module

    def no_data(*args, **kwargs):
        raise AssertionError("loading the model read the data")

    with monkeypatch.context() as patch:
        patch.setattr(loading, "read_data", no_data)
        model = aelab.load(folder)
        from_ckpt = Autoencoder.load_from_checkpoint(folder / "last.ckpt")
    assert isinstance(model, Autoencoder) and not model.training
    assert model.device == torch.device("cpu")
    mse, bce, result = scores_of(model, folder)
    assert mse == pytest.approx(result["test"]["mse"], rel=1e-5)
    assert bce == pytest.approx(result["test"]["bce"], rel=1e-5)

    # images in [0, 1], as (N, C, H, W), flat, or one image: the same reconstructions
    data = aelab.load_data(folder)
    images = model.normalization.decode(data.splits["test"][:8]).reshape(8, 1, 28, 28)
    recon = model.reconstruct(images)
    assert recon.shape == images.shape
    torch.testing.assert_close(recon.flatten(1), model.reconstruct(data.splits["test"][:8],
                                                                   normalized=True))
    torch.testing.assert_close(from_ckpt.reconstruct(images), recon)
    torch.testing.assert_close(model.reconstruct(images[0]), recon[0])
    codes = model.encode(images)
    assert codes.shape == (8, model.net.code_dim)
    torch.testing.assert_close(model.decode(codes), recon)
    with pytest.raises(TypeError, match="needs a VAE"):
        model.sample(4)


def test_a_vae_loads_samples_and_scores_its_test_mse(tmp_path):
    folder = tmp_path / "vae"
    trained(folder, "model.variational=true", "loss=bce", "model.hidden=[64,2]")
    model = aelab.load(folder)
    assert model.net.variational and model.vae is not None
    mse, bce, result = scores_of(model, folder)
    assert mse == pytest.approx(result["test"]["mse"], rel=1e-5)
    assert bce == pytest.approx(result["test"]["bce"], rel=1e-5)
    samples = model.sample(5, generator=torch.Generator().manual_seed(0))
    assert samples.shape == (5, 1, 28, 28) and samples.min() >= 0 and samples.max() <= 1
    x = aelab.load_data(folder).splits["test"][:4]
    mu, _ = model.net.posterior(x)
    torch.testing.assert_close(model.encode(x, normalized=True), mu)  # the posterior mean


def test_stacked_runs_load_each_with_its_own_weights(tmp_path):
    sweep = tmp_path / "sweep"
    assert stacked_main([*TINY, *EPOCHS, "seed=3,4", f"hydra.sweep.dir={sweep}"]) == 0
    folders = sorted(p for p in sweep.iterdir() if (p / "last.ckpt").is_file())
    assert len(folders) == 2
    scores = []
    for folder in folders:
        mse, _, result = scores_of(aelab.load(folder), folder)
        assert result["stacked"]["runs"] == 2
        assert mse == pytest.approx(result["test"]["mse"], rel=1e-5)
        scores.append(mse)
    assert scores[0] != scores[1]  # two seeds, two models


def test_a_checkpoint_without_the_aelab_entry_loads_through_its_data(tmp_path):
    """A checkpoint written before the image shape and statistics were kept in it."""
    folder = tmp_path / "old"
    trained(folder, "normalization=standard", "activation=relu")
    ckpt = torch.load(folder / "last.ckpt", weights_only=True)
    del ckpt[loading.STATE_KEY]
    torch.save(ckpt, folder / "last.ckpt")
    mse, _, result = scores_of(aelab.load(folder), folder)
    assert mse == pytest.approx(result["test"]["mse"], rel=1e-5)


def test_a_folder_without_a_checkpoint_is_refused_clearly(tmp_path):
    with pytest.raises(CheckpointError, match="neither a checkpoint nor a run folder"):
        aelab.load(tmp_path)


def test_importing_aelab_imports_no_torch():
    import subprocess
    import sys

    code = "import sys, aelab; assert 'torch' not in sys.modules; print(aelab.load.__doc__[:3])"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
