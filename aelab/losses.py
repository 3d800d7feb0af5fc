"""Reconstruction losses. Each declares the targets it accepts and, when it works on
logits, the output activation it assumes. Losses return per-pixel values; the
reduction (mean per pixel, sum per image, sum over the batch) is applied once.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from aelab.domains import REAL, UNIT, Range
from aelab.errors import ConfigError

REDUCTIONS = ("mean", "image_sum", "batch_sum")


def reduce(per_pixel: torch.Tensor, reduction: str) -> torch.Tensor:
    """mean: over all pixels; image_sum: sum per image, mean over the batch; batch_sum: sum."""
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

    def reduce(self, per_pixel: torch.Tensor) -> torch.Tensor:
        return reduce(per_pixel, self.reduction)

    def forward(
        self, logits: torch.Tensor, recon: torch.Tensor, target: torch.Tensor
    ) -> torch.Tensor:
        return self.reduce(self.per_pixel(logits, recon, target))

    def prediction(self, logits: torch.Tensor, recon: torch.Tensor) -> torch.Tensor:
        """What the model predicts for a pixel (the reconstruction shown and scored)."""
        return recon


class MSE(ReconstructionLoss):
    """Squared error (y - x)^2."""

    name = "mse"

    def per_pixel(self, logits, recon, target):
        return (recon - target).square()


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

    def per_pixel(self, logits, recon, target):
        return F.binary_cross_entropy_with_logits(logits, target, reduction="none")
