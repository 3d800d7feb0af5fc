"""Diagnostics of a VAE's code: active units, mutual information, posterior collapse.

Pure functions of tensors, in nats; see `aelab.losses.elbo` for the conventions.
"""

from __future__ import annotations

import math

import torch

from aelab.losses.elbo import LOG_2PI, log_normal_diag, reparameterise

# Burda et al. 2016: a latent dimension is active when Var_x(E_q[z_d | x]) exceeds this.
ACTIVE_UNIT_THRESHOLD = 0.01
# Mean KL per image (nats) below which the posterior carries (almost) no information; see
# `posterior_collapse`.
POSTERIOR_COLLAPSE_KL = 0.1


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
