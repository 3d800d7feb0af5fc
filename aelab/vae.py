"""The math of a Gaussian-latent variational autoencoder: pure functions of tensors.

Conventions: `mu` and `logvar` are (N, D) posterior parameters of q(z|x) = N(mu, diag
exp(logvar)), the prior is p(z) = N(0, I); log-densities sum over the last (latent) axis;
everything is in nats. Importance-weighted quantities carry a leading sample axis k:
(k, N, ...). Per-image terms are (N,); summaries (counts, estimates) are 0-dim tensors on
the inputs' device, as in `aelab.diagnostics`. The reconstruction term comes from the
loss: `loss.nll_per_pixel(logits, recon, target).flatten(1).sum(1)` is -log p(x|z) per
image (see `aelab.losses.ReconstructionLoss.likelihood`).
"""

from __future__ import annotations

import math

import torch

from aelab.errors import ConfigError

LOG_2PI = math.log(2 * math.pi)
# Burda et al. 2016: a latent dimension is active when Var_x(E_q[z_d | x]) exceeds this.
ACTIVE_UNIT_THRESHOLD = 0.01
# Mean KL per image (nats) below which the posterior carries (almost) no information; see
# `posterior_collapse`.
POSTERIOR_COLLAPSE_KL = 0.1


# ---------------------------------------------------------------- Gaussian pieces


def gaussian_kl(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, exp(logvar)) || N(0, 1)) per dimension, (N, D):
    (mu^2 + exp(logvar) - 1 - logvar) / 2. Sum over dims for the per-image KL."""
    return 0.5 * (mu.square() + logvar.exp() - 1 - logvar)


def kl_per_dimension(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """Mean over the batch of `gaussian_kl`, (D,): the KL each latent spends (latent/kl/z<i>)."""
    return gaussian_kl(mu, logvar).mean(0)


def reparameterise(
    mu: torch.Tensor,
    logvar: torch.Tensor,
    k: int | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """z = mu + exp(logvar / 2) * eps, eps ~ N(0, I): differentiable in mu and logvar.

    One sample per row, shaped like mu; with `k`, k samples per row, (k, *mu.shape)
    (for `iwae_bound`). `generator` must live on mu's device.
    """
    shape = mu.shape if k is None else (k, *mu.shape)
    eps = torch.randn(shape, generator=generator, device=mu.device, dtype=mu.dtype)
    return mu + torch.exp(0.5 * logvar) * eps


def log_normal_diag(z: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """log N(z; mu, diag exp(logvar)), summed over the last axis (broadcasting)."""
    return -0.5 * (LOG_2PI + logvar + (z - mu).square() * torch.exp(-logvar)).sum(-1)


def log_standard_normal(z: torch.Tensor) -> torch.Tensor:
    """log N(z; 0, I), summed over the last axis."""
    return -0.5 * (LOG_2PI + z.square()).sum(-1)


# ---------------------------------------------------------------- objectives


def kl_weight(epoch: float, beta: float = 1.0, warmup_epochs: float = 0.0) -> float:
    """KL weight at a (fractional) epoch: linear from 0 at epoch 0 to `beta` at `warmup_epochs`,
    then `beta` (Bowman et al. 2016; Sonderby et al. 2016). No warm-up: `beta` throughout."""
    if warmup_epochs < 0 or beta < 0:
        raise ConfigError(
            f"KL warm-up: beta={beta} and warmup_epochs={warmup_epochs} must be >= 0."
        )
    if warmup_epochs == 0:
        return float(beta)
    return float(beta) * min(1.0, max(0.0, epoch / warmup_epochs))


def free_bits_kl(kl_per_dim: torch.Tensor, free_bits: float) -> torch.Tensor:
    """The free-bits KL term (Kingma et al. 2016, "Improved variational inference with IAF").

    sum_d max(free_bits, mean_n KL[n, d]) from (N, D) per-dimension KLs (`gaussian_kl`):
    each latent dimension gets `free_bits` nats per image for free, averaged over the
    mini-batch as in the paper; a dimension below its allowance gets no gradient toward
    the prior, so the encoder is not pushed to collapse it. `free_bits=0` gives the plain
    batch-mean KL. Returns the 0-dim batch-level KL per image (use in place of the KL term).
    """
    if free_bits < 0:
        raise ConfigError(f"free_bits={free_bits} must be >= 0 (nats per latent dimension).")
    return kl_per_dim.mean(0).clamp(min=free_bits).sum()


def negative_elbo(
    nll_per_image: torch.Tensor, kl_per_image: torch.Tensor, beta: float = 1.0
) -> torch.Tensor:
    """Batch mean of -log p(x|z) + beta KL(q(z|x) || p(z)), 0-dim (beta = 1: the -ELBO).

    `kl_per_image` is (N,) or a 0-dim batch-level term such as `free_bits_kl`.
    """
    return (nll_per_image + beta * kl_per_image).mean()


def elbo(
    log_px_given_z: torch.Tensor, log_pz: torch.Tensor, log_qz_given_x: torch.Tensor
) -> torch.Tensor:
    """Single-sample ELBO estimate log p(x|z) + log p(z) - log q(z|x), per image."""
    return log_px_given_z + log_pz - log_qz_given_x


def iwae_bound(
    log_px_given_z: torch.Tensor, log_pz: torch.Tensor, log_qz_given_x: torch.Tensor
) -> torch.Tensor:
    """The importance-weighted bound (Burda et al. 2016) per image, (N,), from (k, N) terms.

    L_k = logsumexp_i(log w_i) - log k, log w_i = log p(x|z_i) + log p(z_i) - log q(z_i|x),
    z_i ~ q(z|x) i.i.d.: L_1 is the ELBO, E[L_k] is non-decreasing in k and tends to
    log p(x) (for each fixed set of samples it need not be monotone).
    """
    log_w = elbo(log_px_given_z, log_pz, log_qz_given_x)
    return torch.logsumexp(log_w, dim=0) - math.log(log_w.shape[0])


# ---------------------------------------------------------------- diagnostics


def posterior_mean_variance(mu_over_data: torch.Tensor) -> torch.Tensor:
    """Var_x(E_q[z_d | x]) per latent dimension, (D,), from (N, D) posterior means."""
    return mu_over_data.var(dim=0, unbiased=False)


def active_units(
    mu_over_data: torch.Tensor, threshold: float = ACTIVE_UNIT_THRESHOLD
) -> torch.Tensor:
    """Number of active latent dimensions (Burda et al. 2016), a 0-dim int64 tensor.

    A dimension is active when the variance over the data of its posterior mean exceeds
    `threshold` (0.01, theirs). Pass the means of the whole evaluation set, not one batch.
    """
    return (posterior_mean_variance(mu_over_data) > threshold).sum()


def mutual_information(
    mu: torch.Tensor,
    logvar: torch.Tensor,
    z: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Estimate of I_q(x; z) over a batch, 0-dim (He et al. 2019, `calc_mi`).

    I = E_x E_q(z|x)[log q(z|x) - log q(z)], with E[log q(z|x)] = -H(q(z|x)) exact for a
    Gaussian, and the aggregate posterior q(z) = mean_x q(z|x) replaced by the mixture of
    the batch's N posteriors, evaluated at one sample z_n ~ q(z|x_n) per image (`z`, (N, D),
    else drawn). Biased: z_n's own component alone gives log q(z_n) >= log q(z_n|x_n) - log N,
    so the estimate is at most log N (up to the Monte Carlo noise of z) and saturates there
    when posteriors do not overlap; it is ~0 when q(z|x) does not depend on x. Memory is
    O(N^2 D): use a few hundred to a few thousand images.
    """
    n, d = mu.shape
    if z is None:
        z = reparameterise(mu, logvar, generator=generator)
    neg_entropy = (-0.5 * (d * LOG_2PI + (1 + logvar).sum(-1))).mean()
    # log q(z_i | x_j) for every pair, (N, N)
    log_density = log_normal_diag(z.unsqueeze(1), mu.unsqueeze(0), logvar.unsqueeze(0))
    log_qz = torch.logsumexp(log_density, dim=1) - math.log(n)
    return neg_entropy - log_qz.mean()


def posterior_collapse(
    active: int | torch.Tensor,
    kl_per_image: float | torch.Tensor,
    kl_threshold: float = POSTERIOR_COLLAPSE_KL,
) -> tuple[bool, str]:
    """(collapsed, reason) from `active_units` and the KL per image in nats (mean taken).

    Collapsed when no unit is active and the mean KL is below `kl_threshold`. The mean
    KL bounds the information the code carries, E_x KL(q(z|x) || p(z)) = I_q(x; z) +
    KL(q(z) || p(z)) >= I_q(x; z); telling even two equally likely kinds of image apart
    takes log 2 = 0.69 nats, so below 0.1 nats (0.14 bits) the decoder gets next to
    nothing from z. A high KL with no active unit is KL the active-unit count does not
    see (a mean offset shared by all x, variances far from 1, or information carried by
    the variances alone): reported, not called collapse; `mutual_information` tells which.
    """
    au = int(active)
    kl = float(kl_per_image.mean()) if torch.is_tensor(kl_per_image) else float(kl_per_image)
    if not math.isfinite(kl):
        return False, f"mean KL is {kl}: no verdict"
    if au > 0:
        return False, f"{au} active units, KL = {kl:.3g} nats per image"
    if kl < kl_threshold:
        return True, (
            f"posterior collapse: 0 active units and KL = {kl:.3g} < {kl_threshold:g} nats "
            f"per image"
        )
    return False, (
        f"0 active units but KL = {kl:.3g} >= {kl_threshold:g} nats per image: KL not in "
        f"the posterior means (check the mutual information)"
    )
