"""Real MNIST, the seed network with the defaults (sigmoid, Adam 1e-3, batch 128), 10 epochs."""

import pytest

from aelab.train import run

MEAN_IMAGE_MSE = 0.0675  # the blob: predicting the training mean image


@pytest.mark.slow
@pytest.mark.parametrize("loss", ["mse", "bce"])
def test_seed_network_learns_mnist(make_config, mnist_root, loss):
    cfg = make_config(f"loss={loss}", f"data.root={mnist_root}", "logger=none",
                      "trainer.enable_progress_bar=false", "trainer.max_epochs=10")
    result = run(cfg)
    mse = result["test"]["mse"]
    print(f"\nMNIST seed network, loss={loss}, 10 epochs: test MSE {mse:.4f} per pixel "
          f"(mean image {MEAN_IMAGE_MSE}), test BCE {result['test']['bce']:.4f}")
    assert mse < 0.035
