"""The math of a Gaussian-latent variational autoencoder: pure functions of tensors.

Conventions: `mu` and `logvar` are (N, D) posterior parameters of q(z|x) = N(mu, diag
exp(logvar)), the prior is p(z) = N(0, I); log-densities sum over the last (latent) axis;
everything is in nats. Importance-weighted quantities carry a leading sample axis k:
(k, N, ...). Per-image terms are (N,); summaries (counts, estimates) are 0-dim tensors on
the inputs' device, as in `aelab.diagnostics.metrics`. The reconstruction term comes from the
loss: `loss.nll_per_pixel(logits, recon, target).flatten(1).sum(1)` is -log p(x|z) per
image (see `aelab.losses.reconstruction.ReconstructionLoss.likelihood`).
"""

from __future__ import annotations

import math

import torch

from aelab.errors import ConfigError

LOG_2PI = math.log(2 * math.pi)


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
    noise: torch.Tensor | None = None,
) -> torch.Tensor:
    """z = mu + exp(logvar / 2) * eps, eps ~ N(0, I): differentiable in mu and logvar.

    One sample per row, shaped like mu; with `k`, k samples per row, (k, *mu.shape)
    (for `iwae_bound`). `generator` must live on mu's device; `noise`, when given, is eps
    (drawn by the caller, e.g. outside torch.func.vmap, where no generator may be used).
    """
    shape = mu.shape if k is None else (k, *mu.shape)
    eps = noise if noise is not None else torch.randn(
        shape, generator=generator, device=mu.device, dtype=mu.dtype)
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
