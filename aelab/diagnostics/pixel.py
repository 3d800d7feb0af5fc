"""Per-pixel reconstruction scores in [0, 1] pixel units, comparable across losses."""

from __future__ import annotations

import torch
import torch.nn.functional as F

BCE_EPS = 1e-6  # predictions are clamped to [eps, 1 - eps] when BCE is scored from probabilities


def pixel_mse(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean squared error per pixel."""
    return (pred - target).square().mean()


def pixel_bce(
    pred: torch.Tensor, target: torch.Tensor, logits: torch.Tensor | None = None
) -> torch.Tensor:
    """Mean binary cross-entropy per pixel; exact from logits when given, else from clamped
    probabilities (targets clamped to [0, 1] too, so any normalisation can be scored)."""
    target = target.clamp(0, 1)
    if logits is not None:
        return F.binary_cross_entropy_with_logits(logits, target)
    return F.binary_cross_entropy(pred.clamp(BCE_EPS, 1 - BCE_EPS), target)
