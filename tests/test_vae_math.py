"""The losses' likelihoods, against closed forms and torch."""

import math

import pytest
import torch
from torch.distributions import Bernoulli, Normal
from torch.distributions import ContinuousBernoulli as TorchCB

from aelab.errors import ConfigError
from aelab.losses import (
    BCE,
    L1,
    LIKELIHOODS,
    MSE,
    BCEExcess,
    ClampedProbabilityBCE,
    ContinuousBernoulli,
    DoubleSigmoidBCE,
    GaussianNLL,
    Huber,
    NaivePositiveCrossEntropy,
    ReconstructionLoss,
    SoftmaxPixelCrossEntropy,
    SwappedLogitsBCE,
    SwappedProbabilityBCE,
    UnclampedProbabilityBCE,
)

F64 = torch.float64


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# ---------------------------------------------------------------- likelihoods of the losses


def test_bce_nll_is_the_bernoulli_log_likelihood_from_logits():
    g = gen()
    z = torch.randn(3, 7, generator=g, dtype=F64) * 4
    binary = (torch.rand(3, 7, generator=g, dtype=F64) > 0.5).to(F64)
    grey = torch.rand(3, 7, generator=g, dtype=F64)
    loss = BCE()
    assert loss.likelihood == "bernoulli"
    for x, validate in ((binary, True), (grey, False)):  # torch refuses grey x unless told
        expected = -Bernoulli(logits=z, validate_args=validate).log_prob(x)
        torch.testing.assert_close(loss.nll_per_pixel(z, torch.sigmoid(z), x), expected)
    torch.testing.assert_close(loss.nll_per_pixel(z, None, grey), loss.per_pixel(z, None, grey))


@pytest.mark.parametrize("sigma", [1.0, 0.1])
def test_mse_nll_is_a_gaussian_of_fixed_sigma_and_leaves_the_training_loss_alone(sigma):
    g = gen(1)
    recon, x = torch.rand(4, 6, generator=g, dtype=F64), torch.rand(4, 6, generator=g, dtype=F64)
    loss = MSE(sigma=sigma)
    assert loss.likelihood == "gaussian" and loss.sigma == sigma
    expected = -Normal(recon, sigma).log_prob(x)
    torch.testing.assert_close(loss.nll_per_pixel(None, recon, x), expected)
    torch.testing.assert_close(loss.per_pixel(None, recon, x), (recon - x).square())
    # a perfect pixel costs the normaliser alone: 0.919 nats at sigma 1, -1.384 at sigma 0.1
    at_zero = loss.nll_per_pixel(None, x[:1, :1], x[:1, :1]).item()
    assert at_zero == pytest.approx(0.5 * math.log(2 * math.pi) + math.log(sigma))
    with pytest.raises(ConfigError, match="loss.sigma=0"):
        MSE(sigma=0)


def test_gaussian_nll_likelihood_uses_its_learned_variance():
    s = -1.3
    loss = GaussianNLL(init_log_var=s)
    g = gen(2)
    recon, x = torch.rand(4, 6, generator=g), torch.randn(4, 6, generator=g)
    assert loss.likelihood == "gaussian_learned"
    expected = -Normal(recon, math.exp(s / 2)).log_prob(x)
    torch.testing.assert_close(loss.nll_per_pixel(None, recon, x), expected)
    (grad,) = torch.autograd.grad(loss.nll_per_pixel(None, recon, x).sum(), loss.log_var)
    assert grad.item() != 0  # the ELBO trains the variance too


def test_continuous_bernoulli_nll_includes_its_normaliser():
    z = torch.cat([torch.linspace(-9, 9, 37), torch.tensor([0.0, 1e-4, -0.05])]).to(F64)
    z = z.unsqueeze(1).expand(-1, 4)
    x = torch.tensor([0.0, 0.2, 0.7, 1.0], dtype=F64).expand_as(z)
    loss = ContinuousBernoulli()
    assert loss.likelihood == "continuous_bernoulli"
    expected = -TorchCB(logits=z).log_prob(x)
    torch.testing.assert_close(loss.nll_per_pixel(z, torch.sigmoid(z), x), expected, atol=1e-7,
                               rtol=1e-9)
    # the normaliser matters: without it the NLL would be the BCE, off by log C >= log 2
    gap = BCE().nll_per_pixel(z, None, x) - loss.nll_per_pixel(z, None, x)
    assert gap.min().item() == pytest.approx(math.log(2))


def test_continuous_bernoulli_nll_stays_exact_in_float32_where_torchs_clamps():
    # exact: -log p = z (1 - x) + log(1 + e^-z) - log(z / tanh(z / 2)) for z > 0
    z, x = torch.tensor([15.0, 30.0, 60.0]), torch.full((3,), 0.3)
    exact = [zi * 0.7 + math.log1p(math.exp(-zi)) - math.log(zi / math.tanh(zi / 2))
             for zi in z.tolist()]
    ours = ContinuousBernoulli().nll_per_pixel(z, None, x)
    torch.testing.assert_close(ours.double(), torch.tensor(exact, dtype=F64), atol=0, rtol=1e-7)
    # torch works from clamped probabilities: off by 0.5 nats at z = 60, even in float64
    torchs = -TorchCB(logits=z.double()).log_prob(x.double())
    assert (torchs[2] - exact[2]).item() == pytest.approx(0.5096, abs=1e-3)


NOT_LIKELIHOODS = [L1, Huber, BCEExcess, NaivePositiveCrossEntropy, DoubleSigmoidBCE,
                   ClampedProbabilityBCE, SoftmaxPixelCrossEntropy, SwappedLogitsBCE,
                   SwappedProbabilityBCE, UnclampedProbabilityBCE]


@pytest.mark.parametrize("cls", NOT_LIKELIHOODS, ids=lambda c: c.name)
def test_losses_that_are_not_likelihoods_say_so_and_refuse_an_nll(cls):
    assert cls.likelihood is None
    z = torch.zeros(1, 2)
    with pytest.raises(ConfigError, match=f"loss={cls.name} is not a likelihood"):
        cls().nll_per_pixel(z, torch.sigmoid(z), torch.full_like(z, 0.5))


def test_every_loss_declares_a_known_likelihood_or_none():
    def subclasses(c):
        for s in c.__subclasses__():
            yield s
            yield from subclasses(s)

    found = {c.name: c.likelihood for c in subclasses(ReconstructionLoss)}
    assert {k: v for k, v in found.items() if v is not None} == {
        "bce": "bernoulli", "mse": "gaussian", "gaussian_nll": "gaussian_learned",
        "continuous_bernoulli": "continuous_bernoulli",
    }
    assert set(found.values()) - {None} == set(LIKELIHOODS)
