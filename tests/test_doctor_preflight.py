"""The check before training: the 2017 loss mistakes are caught on one batch, the proper
losses pass, it costs well under a second, and the CLI prints it before the first step."""

from __future__ import annotations

import time

import pytest
import torch

from aelab import losses as L
from aelab.data.normalization import Standard
from aelab.data.sources import synthetic_images
from aelab.doctor.preflight import check_before_training, check_loss, perfect_logits
from aelab.errors import ConfigError

from conftest import TINY, run_cli


@pytest.fixture(scope="module")
def unit() -> torch.Tensor:
    """64 images in [0, 1] with MNIST's traits: exact 0s and 1s and grey levels between."""
    images = synthetic_images(64, seed=3).flatten(1)
    images[:, :100] = 0.0
    images[:8, 100:140] = 1.0
    return images


@pytest.fixture(scope="module")
def standard(unit) -> torch.Tensor:
    return Standard().fit(unit.unsqueeze(1)).encode(unit)


MISTAKES = {  # H4, H9, both H10 forms: the input is not the minimum; H8 below
    "H4": L.NaivePositiveCrossEntropy(), "H9": L.SoftmaxPixelCrossEntropy(),
    "H10 logits": L.SwappedLogitsBCE(), "H10 probabilities": L.SwappedProbabilityBCE()}
PROPER = {"bce": L.BCE(), "mse": L.MSE(), "l1": L.L1(), "huber": L.Huber(),
          "gaussian_nll": L.GaussianNLL(), "continuous_bernoulli": L.ContinuousBernoulli(),
          "bce_excess": L.BCEExcess(), "bce_clamped_probs": L.ClampedProbabilityBCE()}


@pytest.mark.parametrize("name", MISTAKES)
def test_the_input_is_not_a_mistakes_minimum(name, unit):
    report = check_loss(MISTAKES[name], unit, "sigmoid", MISTAKES[name].target_range)
    assert len(report["problems"]) == 1 and "is not loss=" in report["problems"][0]
    numbers = report["numbers"]
    assert numbers["best_candidate_loss"] < numbers["loss_at_input"]


def test_h4_prefers_the_all_white_image(unit):
    numbers = check_loss(L.NaivePositiveCrossEntropy(), unit, "sigmoid")["numbers"]
    assert numbers["best_candidate"] == "all-white image"
    assert numbers["best_candidate_loss"] < 0.1 * numbers["loss_at_input"]


def test_h8_bce_on_standardised_targets_is_out_of_domain_and_unbounded(standard):
    report = check_loss(L.BCE(), standard, "sigmoid", L.BCE.target_range)
    assert "outside the [0, 1]" in report["problems"][0]
    assert "unbounded below" in report["problems"][1]
    assert report["numbers"]["unbounded_pixel_share"] > 0.5


@pytest.mark.parametrize("name", PROPER)
@pytest.mark.parametrize("binary", [False, True])
def test_proper_losses_pass_on_unit_targets(name, binary, unit):
    targets = (unit > 0.5).float() if binary else unit
    report = check_loss(PROPER[name], targets, "sigmoid", PROPER[name].target_range)
    assert report["problems"] == [], report


@pytest.mark.parametrize("loss", [L.MSE(), L.L1(), L.GaussianNLL()])
def test_losses_for_any_target_pass_on_standardised_targets(loss, standard):
    assert check_loss(loss, standard, "identity", loss.target_range)["problems"] == []


def test_h11_unclamped_log_is_not_finite_at_saturation(unit):
    report = check_loss(L.UnclampedProbabilityBCE(), unit, "sigmoid")
    assert report["problems"] and "inf or NaN" in report["problems"][0]


def test_perfect_logits_invert_the_continuous_bernoulli_mean():
    t = torch.tensor([[0.01, 0.3, 0.5, 0.9]], dtype=torch.float64)
    z = perfect_logits(L.ContinuousBernoulli(), t, "sigmoid")
    assert torch.allclose(L.cb_mean(z), t, atol=1e-9)


def test_a_loss_finite_nowhere_is_refused(unit):
    class Broken(L.MSE):
        name = "broken"

        def per_pixel(self, logits, recon, target):
            return recon * float("nan")

    class Data:
        splits = {"train": unit}
        stochastic = False
        normalization = Standard()

    with pytest.raises(ConfigError, match="cannot mean anything"):
        check_before_training(Broken(), Data(), "sigmoid")


def test_the_check_costs_well_under_a_second(unit):
    check_loss(L.ContinuousBernoulli(), unit, "sigmoid")  # warm
    started = time.perf_counter()
    for loss in [*MISTAKES.values(), *PROPER.values()]:
        check_loss(loss, unit, "sigmoid", loss.target_range)
    assert (time.perf_counter() - started) / (len(MISTAKES) + len(PROPER)) < 0.25


def test_the_cli_prints_loss_misspecified_before_the_first_step(tmp_path):
    proc = run_cli(*TINY, "loss=bce_naive_positive", f"hydra.run.dir={tmp_path / 'run'}",
                   cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    text = proc.stdout + proc.stderr
    warning = text.index("doctor, before training: loss_misspecified")
    assert warning < text.index("training from scratch") < text.index("Trainer.fit")
    assert "all-white image" in text[warning:warning + 400] and "Fix: loss=bce" in text
