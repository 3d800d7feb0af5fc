"""Reconstruction losses. Each declares the targets it accepts and, when it works on
logits, the output activation it assumes. Losses return per-pixel values; the
reduction (mean per pixel, sum per image, sum over the batch) is applied once.

The losses that are negative log-likelihoods name their `likelihood` and give
`nll_per_pixel`, -log p(x | decoder output) in nats (what a VAE's ELBO needs); the
others (l1, huber, bce_excess, the 2017 mistakes) have `likelihood = None`.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from aelab.data.domains import REAL, UNIT, Range
from aelab.errors import ConfigError

REDUCTIONS = ("mean", "image_sum", "batch_sum")
# values of ReconstructionLoss.likelihood (None: the loss is not a likelihood)
LIKELIHOODS = ("bernoulli", "gaussian", "gaussian_learned", "continuous_bernoulli")


def reduce(per_pixel: torch.Tensor, reduction: str, model_axis: bool = False) -> torch.Tensor:
    """mean: over all pixels; image_sum: sum per image, mean over the batch; batch_sum: sum.
    With `model_axis`, `per_pixel` is (K, batch, pixels): each model's reduction, (K,)."""
    if model_axis:
        dims, batch = tuple(range(1, per_pixel.dim())), per_pixel.shape[1]
        if reduction == "mean":
            return per_pixel.mean(dims)
        return per_pixel.sum(dims) / (batch if reduction == "image_sum" else 1)
    if reduction == "mean":
        return per_pixel.mean()
    if reduction == "image_sum":
        return per_pixel.sum() / per_pixel.shape[0]
    return per_pixel.sum()


class ReconstructionLoss(nn.Module):
    """Base class: `per_pixel(logits, recon, target)` and a reduction."""

    name = "loss"
    target_range: Range = REAL  # targets the loss is defined for
    output_activation: str | None = None  # the output activation its logits assume, if any
    likelihood: str | None = None  # one of LIKELIHOODS when the loss is a likelihood

    def __init__(self, reduction: str = "mean") -> None:
        super().__init__()
        if reduction not in REDUCTIONS:
            raise ConfigError(
                f"loss.reduction={reduction!r} is unknown; choose one of {', '.join(REDUCTIONS)}."
            )
        self.reduction = reduction

    def per_pixel(
        self, logits: torch.Tensor, recon: torch.Tensor, target: torch.Tensor
    ) -> torch.Tensor:
        raise NotImplementedError

    def nll_per_pixel(
        self, logits: torch.Tensor, recon: torch.Tensor, target: torch.Tensor
    ) -> torch.Tensor:
        """-log p(target | output) per pixel, in nats; only for losses with a `likelihood`."""
        raise ConfigError(
            f"loss={self.name} is not a likelihood, so it has no negative log-likelihood "
            f"(needed by a VAE's ELBO); choose one of the losses with a likelihood: "
            f"bce, mse, gaussian_nll, continuous_bernoulli."
        )

    def reduce(self, per_pixel: torch.Tensor) -> torch.Tensor:
        return reduce(per_pixel, self.reduction)

    def learned_values(self) -> dict[str, torch.Tensor]:
        """The loss's own trained parameters, as metrics to log each epoch (none here)."""
        return {}

    def forward(
        self, logits: torch.Tensor, recon: torch.Tensor, target: torch.Tensor
    ) -> torch.Tensor:
        return self.reduce(self.per_pixel(logits, recon, target))

    def prediction(self, logits: torch.Tensor, recon: torch.Tensor) -> torch.Tensor:
        """What the model predicts for a pixel (the reconstruction shown and scored)."""
        return recon


class MSE(ReconstructionLoss):
    """Squared error (y - x)^2; as a likelihood, a Gaussian N(x; y, sigma^2) of fixed std.

    `sigma` only enters `nll_per_pixel`, (y - x)^2 / (2 sigma^2) + log(2 pi sigma^2) / 2;
    the training loss `per_pixel` stays (y - x)^2 whatever sigma.
    """

    name = "mse"
    likelihood = "gaussian"

    def __init__(self, sigma: float = 1.0, reduction: str = "mean") -> None:
        super().__init__(reduction)
        if not sigma > 0:
            raise ConfigError(f"loss.sigma={sigma} must be positive.")
        self.sigma = float(sigma)

    def per_pixel(self, logits, recon, target):
        return (recon - target).square()

    def nll_per_pixel(self, logits, recon, target):
        var = self.sigma**2
        return (recon - target).square() / (2 * var) + 0.5 * (LOG_2PI + math.log(var))


class L1(ReconstructionLoss):
    """Absolute error |y - x|."""

    name = "l1"

    def per_pixel(self, logits, recon, target):
        return (recon - target).abs()


class Huber(ReconstructionLoss):
    """Quadratic 0.5 e^2 for |e| <= delta, linear delta (|e| - delta/2) beyond."""

    name = "huber"

    def __init__(self, delta: float = 0.1, reduction: str = "mean") -> None:
        super().__init__(reduction)
        if delta <= 0:
            raise ConfigError(f"loss.delta={delta} must be positive.")
        self.delta = delta

    def per_pixel(self, logits, recon, target):
        return F.huber_loss(recon, target, reduction="none", delta=self.delta)


class BCE(ReconstructionLoss):
    """Binary cross-entropy from logits z (stable): -[x log p + (1-x) log(1-p)], p = sigmoid(z)."""

    name = "bce"
    target_range = UNIT
    output_activation = "sigmoid"
    likelihood = "bernoulli"

    def per_pixel(self, logits, recon, target):
        return F.binary_cross_entropy_with_logits(logits, target, reduction="none")

    def nll_per_pixel(self, logits, recon, target):
        """The Bernoulli NLL, exact from the logits; a normalised pmf only for binary targets."""
        return self.per_pixel(logits, recon, target)


# ---------------------------------------------------------------------------
# Better-founded losses for data in [0, 1] (or any data, for the Gaussian).
# ---------------------------------------------------------------------------

LOG_2PI = math.log(2 * math.pi)
# |l - 1/2| below which log C(l) of the continuous Bernoulli uses its Taylor expansion:
# the dropped term is about 5.7 (l - 1/2)^6 < 1e-7 there.
CB_LOG_NORM_TAYLOR = 0.05
# |z| below which the continuous Bernoulli mean uses its series in the logit z:
# the dropped term is about z^7 / 1.2e6 < 1e-8 there.
CB_MEAN_TAYLOR = 0.5


def binary_entropy(t: torch.Tensor) -> torch.Tensor:
    """H(t) = -[t log t + (1 - t) log(1 - t)], with 0 log 0 = 0."""
    return -(torch.xlogy(t, t) + torch.xlogy(1 - t, 1 - t))


def cb_log_norm(logits: torch.Tensor) -> torch.Tensor:
    """log C(l) of the continuous Bernoulli with l = sigmoid(z), computed from the logits z.

    C(l) = 2 artanh(1 - 2l) / (1 - 2l). With l = sigmoid(z), 1 - 2l = -tanh(z/2) and
    artanh(1 - 2l) = -z/2, so C = z / tanh(z/2), an even function of z, and
    log C = log|z| - log tanh(|z|/2) exactly, with no probability ever rounded.
    Near l = 1/2 (|l - 1/2| < CB_LOG_NORM_TAYLOR) both logs cancel, so there
    log C = log 2 + (4/3) d^2 + (104/45) d^4 with d = l - 1/2 = tanh(z/2) / 2.
    Each branch gets a safe input where it is not used, so gradients stay finite.
    """
    d = torch.tanh(logits / 2) / 2
    near = d.abs() < CB_LOG_NORM_TAYLOR
    a = torch.where(near, torch.ones_like(logits), logits.abs())
    # log tanh(a/2) = log(1 - e^-a) - log(1 + e^-a), accurate for every a > 0
    exact = torch.log(a) - torch.log(-torch.expm1(-a)) + torch.log1p(torch.exp(-a))
    d2 = d.square()
    taylor = math.log(2.0) + (4.0 / 3.0 + 104.0 / 45.0 * d2) * d2
    return torch.where(near, taylor, exact)


def cb_mean(logits: torch.Tensor) -> torch.Tensor:
    """Mean of the continuous Bernoulli, mu(l) = l / (2l - 1) + 1 / (2 artanh(1 - 2l)).

    From the logits: mu = 1/2 + 1 / (2 tanh(z/2)) - 1/z, which is 1/2 at z = 0
    (l = 1/2), where both fractions blow up; for |z| < CB_MEAN_TAYLOR the series
    mu = 1/2 + z/12 - z^3/720 + z^5/30240 is used instead.
    """
    near = logits.abs() < CB_MEAN_TAYLOR
    z = torch.where(near, torch.ones_like(logits), logits)
    exact = 0.5 + 0.5 / torch.tanh(z / 2) - 1 / z
    z2 = logits.square()
    taylor = 0.5 + logits * (1.0 / 12 + z2 * (-1.0 / 720 + z2 / 30240))
    return torch.where(near, taylor, exact)


class ContinuousBernoulli(ReconstructionLoss):
    """Continuous Bernoulli negative log-likelihood (Loaiza-Ganem & Cunningham, 2019).

    -log p(x | l) = BCE(z, x) - log C(l), l = sigmoid(z): the normalised likelihood
    for data in [0, 1]. It is a density, so it can be negative. Its mean, not l,
    is the reconstruction shown and scored (`prediction`).
    """

    name = "continuous_bernoulli"
    target_range = UNIT
    output_activation = "sigmoid"
    likelihood = "continuous_bernoulli"

    def per_pixel(self, logits, recon, target):
        bce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
        return bce - cb_log_norm(logits)

    def nll_per_pixel(self, logits, recon, target):
        return self.per_pixel(logits, recon, target)

    def prediction(self, logits, recon):
        return cb_mean(logits)


class BCEExcess(ReconstructionLoss):
    """BCE minus the binary entropy of the target (the KL form): 0 at a perfect reconstruction.

    Same gradient as `bce`; only the reported values differ (no floor at H(x)).
    """

    name = "bce_excess"
    target_range = UNIT
    output_activation = "sigmoid"

    def per_pixel(self, logits, recon, target):
        bce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
        return bce - binary_entropy(target)


class GaussianNLL(ReconstructionLoss):
    """Gaussian negative log-likelihood with one learned variance shared by all pixels.

    0.5 [log(2 pi) + s + (y - x)^2 / exp(s)] with s = log sigma^2 a parameter of this
    module (a submodule of the LightningModule, so the optimiser trains it). At its
    optimum exp(s) is the mean squared error. Accepts any targets.
    """

    name = "gaussian_nll"
    likelihood = "gaussian_learned"

    def __init__(self, init_log_var: float = 0.0, reduction: str = "mean") -> None:
        super().__init__(reduction)
        self.log_var = nn.Parameter(torch.tensor(float(init_log_var)))

    def per_pixel(self, logits, recon, target):
        sq = (recon - target).square()
        return 0.5 * (LOG_2PI + self.log_var + sq * torch.exp(-self.log_var))

    def nll_per_pixel(self, logits, recon, target):
        return self.per_pixel(logits, recon, target)

    def learned_values(self) -> dict[str, torch.Tensor]:
        """`train/sigma`: the learned std exp(s / 2), logged each epoch."""
        return {"train/sigma": torch.exp(0.5 * self.log_var.detach())}
