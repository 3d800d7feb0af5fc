"""The VAE math (aelab.losses.elbo, aelab.diagnostics.latent) and the losses' likelihoods,
against closed forms and torch."""

import math

import pytest
import torch
from torch.distributions import Bernoulli, Normal, kl_divergence
from torch.distributions import ContinuousBernoulli as TorchCB
from torch.distributions import MultivariateNormal as MVN

from aelab.diagnostics import latent
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
from aelab.losses import elbo as vae

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

    # only aelab's own losses: other tests define subclasses of their own
    found = {c.name: c.likelihood for c in subclasses(ReconstructionLoss)
             if c.__module__.startswith("aelab.")}
    assert {k: v for k, v in found.items() if v is not None} == {
        "bce": "bernoulli", "mse": "gaussian", "gaussian_nll": "gaussian_learned",
        "continuous_bernoulli": "continuous_bernoulli",
    }
    assert set(found.values()) - {None} == set(LIKELIHOODS)


# ---------------------------------------------------------------- Gaussian pieces


def test_gaussian_kl_is_the_closed_form_and_torchs():
    g = gen(3)
    mu, logvar = (torch.randn(5, 4, generator=g, dtype=F64) for _ in range(2))
    kl = vae.gaussian_kl(mu, logvar)
    assert kl.shape == (5, 4)
    var = logvar.exp()
    torch.testing.assert_close(kl, 0.5 * (mu**2 + var - 1 - torch.log(var)))
    reference = kl_divergence(Normal(mu, var.sqrt()), Normal(0.0, 1.0))
    torch.testing.assert_close(kl, reference)
    torch.testing.assert_close(kl.sum(1), reference.sum(1))
    assert vae.gaussian_kl(torch.zeros(2, 3), torch.zeros(2, 3)).abs().max() == 0  # q = prior
    # mu = 1, var = e: (1 + e - 1 - 1) / 2
    one = vae.gaussian_kl(torch.ones(1, 1, dtype=F64), torch.ones(1, 1, dtype=F64)).item()
    assert one == pytest.approx((math.e - 1) / 2)
    torch.testing.assert_close(vae.kl_per_dimension(mu, logvar), kl.mean(0))


def test_log_densities_match_torch():
    g = gen(4)
    z, mu, logvar = (torch.randn(3, 5, 4, generator=g, dtype=F64) for _ in range(3))
    expected = Normal(mu, (0.5 * logvar).exp()).log_prob(z).sum(-1)
    torch.testing.assert_close(vae.log_normal_diag(z, mu, logvar), expected)
    torch.testing.assert_close(vae.log_standard_normal(z), Normal(0.0, 1.0).log_prob(z).sum(-1))
    at_zero = vae.log_standard_normal(torch.zeros(1, 2)).item()
    assert at_zero == pytest.approx(-math.log(2 * math.pi))


def test_reparameterise_is_reproducible_differentiable_and_has_the_right_moments():
    mu = torch.tensor([[1.0, -2.0]], requires_grad=True)
    logvar = torch.tensor([[0.0, math.log(0.25)]], requires_grad=True)
    z1 = vae.reparameterise(mu, logvar, generator=gen(5))
    torch.testing.assert_close(z1, vae.reparameterise(mu, logvar, generator=gen(5)))
    assert z1.shape == (1, 2)
    eps = torch.randn(1, 2, generator=gen(5))
    torch.testing.assert_close(z1, mu + torch.tensor([[1.0, 0.5]]) * eps)
    z1.sum().backward()
    torch.testing.assert_close(mu.grad, torch.ones(1, 2))
    torch.testing.assert_close(logvar.grad, 0.5 * torch.tensor([[1.0, 0.5]]) * eps)
    many = vae.reparameterise(mu.detach(), logvar.detach(), k=20000, generator=gen(6))
    assert many.shape == (20000, 1, 2)
    torch.testing.assert_close(many.mean(0), mu.detach(), atol=0.03, rtol=0)
    torch.testing.assert_close(many.std(0), torch.tensor([[1.0, 0.5]]), atol=0.02, rtol=0)


# ---------------------------------------------------------------- objectives


def test_free_bits_on_hand_numbers():
    kl = torch.tensor([[0.1, 2.0, 0.5], [0.3, 4.0, 0.5]], requires_grad=True)  # means .2, 3, .5
    assert vae.free_bits_kl(kl, 0.0).item() == pytest.approx(3.7)
    fb = vae.free_bits_kl(kl, 0.25)
    assert fb.item() == pytest.approx(0.25 + 3.0 + 0.5)
    fb.backward()
    # the dimension under its allowance gets no gradient; the others their batch-mean's 1/N
    torch.testing.assert_close(kl.grad, torch.tensor([[0.0, 0.5, 0.5], [0.0, 0.5, 0.5]]))
    assert vae.free_bits_kl(kl.detach(), 5.0).item() == pytest.approx(15.0)
    with pytest.raises(ConfigError, match="free_bits=-1"):
        vae.free_bits_kl(kl, -1)


def test_kl_weight_warms_up_linearly_to_beta():
    weights = [vae.kl_weight(e, beta=1.0, warmup_epochs=10) for e in (0, 2.5, 5, 10, 15)]
    assert weights == pytest.approx([0.0, 0.25, 0.5, 1.0, 1.0])
    assert vae.kl_weight(5, beta=4.0, warmup_epochs=10) == pytest.approx(2.0)
    assert vae.kl_weight(0.0, beta=0.5) == 0.5  # no warm-up
    with pytest.raises(ConfigError, match="warmup_epochs=-1"):
        vae.kl_weight(1, 1.0, -1)


def test_negative_elbo_on_hand_numbers():
    nll, kl = torch.tensor([100.0, 80.0]), torch.tensor([10.0, 20.0])
    assert vae.negative_elbo(nll, kl).item() == pytest.approx(105.0)
    assert vae.negative_elbo(nll, kl, beta=0.5).item() == pytest.approx(97.5)
    assert vae.negative_elbo(nll, torch.tensor(3.0)).item() == pytest.approx(93.0)  # free bits


# ---------------------------------------------------------------- IWAE on a linear-Gaussian model


class LinearGaussian:
    """p(z) = N(0, I_2), p(x|z) = N(Wz + b, s^2 I_3): log p(x) and p(z|x) in closed form.

    q(z|x) is a deliberately imperfect diagonal Gaussian: the true posterior mean shifted
    by 0.4 and 1.5 times its marginal variances, so the ELBO is loose by about 1.2 nats.
    """

    W = torch.tensor([[1.0, 0.5], [-0.3, 0.8], [0.6, -1.2]], dtype=F64)
    b = torch.tensor([0.1, -0.2, 0.3], dtype=F64)
    s = 0.5
    x = torch.tensor([[0.7, -0.4, 1.1], [-1.0, 0.3, 0.2]], dtype=F64)

    def __init__(self) -> None:
        W, s = self.W, self.s
        self.log_px = MVN(self.b, W @ W.T + s**2 * torch.eye(3, dtype=F64)).log_prob(self.x)
        self.post_cov = torch.linalg.inv(torch.eye(2, dtype=F64) + W.T @ W / s**2)
        self.post_mean = (self.x - self.b) @ W / s**2 @ self.post_cov
        self.mu = self.post_mean + 0.4
        self.logvar = torch.log(1.5 * torch.diag(self.post_cov)).expand_as(self.mu)

    def terms(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(log p(x|z), log p(z), log q(z|x)) for samples z of shape (..., N, 2)."""
        log_var_x = torch.full((3,), math.log(self.s**2), dtype=F64)
        log_px_z = vae.log_normal_diag(self.x, z @ self.W.T + self.b, log_var_x)
        return log_px_z, vae.log_standard_normal(z), vae.log_normal_diag(z, self.mu, self.logvar)


def test_iwae_with_one_sample_is_the_elbo_of_that_sample():
    m = LinearGaussian()
    z = vae.reparameterise(m.mu, m.logvar, k=1, generator=gen(7))
    log_px_z, log_pz, log_qz = m.terms(z)
    bound = vae.iwae_bound(log_px_z, log_pz, log_qz)
    assert bound.shape == (2,)
    torch.testing.assert_close(bound, (log_px_z + log_pz - log_qz)[0])
    torch.testing.assert_close(bound, vae.elbo(log_px_z, log_pz, log_qz)[0])


def test_iwae_bound_rises_with_k_toward_the_true_log_likelihood():
    m = LinearGaussian()
    reps, k_max = 500, 1000
    z = vae.reparameterise(m.mu, m.logvar, k=k_max * reps, generator=gen(0))
    terms = [t.view(k_max, reps, 2) for t in m.terms(z)]  # (k, replicate, image)
    # E[L_1] is the ELBO: log p(x) - KL(q || p(z|x)), and with the analytic KL to the prior
    # it is -negative_elbo(E_q[-log p(x|z)], KL(q || p(z)))
    q = MVN(m.mu, torch.diag_embed(m.logvar.exp()))
    elbo = m.log_px - kl_divergence(q, MVN(m.post_mean, m.post_cov))
    assert (m.log_px - elbo).min().item() > 1.0  # q is far enough off to leave room
    mean_elbo = vae.elbo(*terms).mean((0, 1))
    torch.testing.assert_close(mean_elbo, elbo, atol=0.01, rtol=0)
    nll = -terms[0].mean((0, 1))
    kl = vae.gaussian_kl(m.mu, m.logvar).sum(1)
    torch.testing.assert_close(-(nll + kl), elbo, atol=0.01, rtol=0)
    torch.testing.assert_close(-vae.negative_elbo(nll, kl), elbo.mean(), atol=0.01, rtol=0)
    # the bound, averaged over replicates, rises with k (each step by far more than its
    # Monte Carlo noise, ~0.04 nats) and at k = 1000 is within 0.02 of log p(x)
    bounds = torch.stack([vae.iwae_bound(*(t[:k] for t in terms)).mean(0) for k in (1, 3, 10, 30)])
    assert (bounds.diff(dim=0) > 0.05).all(), bounds
    assert (bounds < m.log_px).all()
    top = vae.iwae_bound(*terms).mean(0)
    torch.testing.assert_close(top, m.log_px, atol=0.02, rtol=0)
    assert (top > bounds[-1]).all()


def test_iwae_is_exact_for_every_k_when_q_is_the_true_posterior():
    m = LinearGaussian()
    full_cov_q = MVN(m.post_mean, m.post_cov)  # not diagonal: log q from torch
    z = full_cov_q.sample((7,))
    log_px_z, log_pz, _ = m.terms(z)
    bound = vae.iwae_bound(log_px_z, log_pz, full_cov_q.log_prob(z))
    torch.testing.assert_close(bound, m.log_px)


# ---------------------------------------------------------------- active units, MI, collapse


def test_active_units_count_the_inputs_the_encoder_mean_copies():
    x = torch.rand(500, 10, generator=gen(8))  # variance 1/12 per input, above 0.01
    ignores_x = torch.tensor([0.3, -1.0, 2.0, 0.0]).expand(500, 4)
    au = latent.active_units(ignores_x)
    assert au.ndim == 0 and au.item() == 0
    for k in (1, 3, 4):
        mean = torch.cat([x[:, :k], torch.full((500, 4 - k), 0.7)], 1)
        assert latent.active_units(mean).item() == k
    # a mean that moves with x, but by less than the threshold, is not active
    assert latent.active_units(0.2 * x[:, :4]).item() == 0  # variance 0.04 / 12 = 0.0033
    torch.testing.assert_close(latent.posterior_mean_variance(x[:, :2] * 0 + 1), torch.zeros(2))


def test_mutual_information_is_zero_without_x_and_bounded_by_log_n_with_it():
    n, d = 1000, 3
    g = gen(9)
    x = torch.randn(n, d, generator=g, dtype=F64)
    # q(z|x) ignores x: the batch mixture is q(z|x) itself, the estimate is noise around 0
    flat = latent.mutual_information(torch.full((n, d), 0.3, dtype=F64),
                                  torch.full((n, d), -1.0, dtype=F64), generator=g)
    assert abs(flat.item()) < 0.15
    # mu = x ~ N(0, I), q(z|x) = N(x, I): I(x; z) = (d / 2) log 2 = 1.04 nats exactly
    mi = latent.mutual_information(x, torch.zeros(n, d, dtype=F64), generator=g)
    assert mi.ndim == 0 and 0 < mi.item() < math.log(n)
    assert mi.item() == pytest.approx(d / 2 * math.log(2), abs=0.2)
    # posteriors that never overlap: the estimate saturates at log N, not at I = infinity
    sharp = latent.mutual_information(10 * x, torch.full((n, d), math.log(1e-4), dtype=F64),
                                   generator=g)
    assert sharp.item() == pytest.approx(math.log(n), abs=0.15)
    # for given samples z the bias bound is exact: estimate <= -H - mean log q(z_n|x_n) + log N
    mu, logvar = 10 * x[:50], torch.full((50, d), math.log(1e-4), dtype=F64)
    z = vae.reparameterise(mu, logvar, generator=g)
    neg_entropy = Normal(mu, (0.5 * logvar).exp()).entropy().sum(1).mean().neg()
    bound = neg_entropy - vae.log_normal_diag(z, mu, logvar).mean() + math.log(50)
    est = latent.mutual_information(mu, logvar, z=z)
    assert est.item() <= bound.item() + 1e-9
    assert est.item() == pytest.approx(bound.item(), abs=1e-9)  # no overlap: equality


def test_posterior_collapse_verdict_on_hand_numbers():
    collapsed, reason = latent.posterior_collapse(torch.tensor(0), torch.tensor([0.02, 0.06]))
    assert collapsed and reason.startswith("posterior collapse: 0 active units and KL = 0.04")
    assert latent.posterior_collapse(0, 0.099)[0] is True
    assert latent.posterior_collapse(0, 0.1)[0] is False  # the threshold itself is not below it
    healthy, reason = latent.posterior_collapse(5, 24.3)
    assert not healthy and reason == "5 active units, KL = 24.3 nats per image"
    assert latent.posterior_collapse(2, 0.05)[0] is False  # active units: information flows
    off, reason = latent.posterior_collapse(0, 3.0)
    assert not off and "KL not in the posterior means" in reason
    assert latent.posterior_collapse(0, 0.3, kl_threshold=0.5)[0] is True
    assert latent.posterior_collapse(0, math.nan) == (False, "mean KL is nan: no verdict")
    assert latent.POSTERIOR_COLLAPSE_KL == 0.1 and latent.ACTIVE_UNIT_THRESHOLD == 0.01
