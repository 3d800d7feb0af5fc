"""Pixel normalisations: map [0, 1] images to the values the network sees and must reconstruct.

Every normalisation encodes whole in-memory tensors once (`encode`), maps
reconstructions back to [0, 1] pixel units for comparable metrics (`decode`),
and declares the range of its targets. `stochastic_binary` is the one that
also acts per batch: a fresh Bernoulli sample of the intensities.
"""

from __future__ import annotations

import torch

from aelab.domains import REAL, SYMMETRIC, UNIT, Range


class Normalization:
    """Identity on [0, 1] intensities: the `unit` normalisation."""

    name = "unit"
    target_range: Range = UNIT

    def fit(self, train: torch.Tensor) -> Normalization:
        """Learn statistics from the [0, 1] training images (no-op unless overridden)."""
        return self

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def decode(self, y: torch.Tensor) -> torch.Tensor:
        return y

    def sample(self, x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        """Per-batch transform of encoded data (identity unless stochastic)."""
        return x


Unit = Normalization


class Standard(Normalization):
    """Subtract the training set's pixel mean and divide by its std (one scalar each)."""

    name = "standard"
    target_range = REAL

    def __init__(self) -> None:
        self.mean = 0.0
        self.std = 1.0

    def fit(self, train: torch.Tensor) -> Standard:
        self.mean = float(train.mean())
        self.std = float(train.std())
        return self

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std

    def decode(self, y: torch.Tensor) -> torch.Tensor:
        return y * self.std + self.mean


class Symmetric(Normalization):
    """Scale [0, 1] to [-1, 1]."""

    name = "symmetric"
    target_range = SYMMETRIC

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return x * 2 - 1

    def decode(self, y: torch.Tensor) -> torch.Tensor:
        return (y + 1) / 2


class Binary(Normalization):
    """Threshold the intensities: 1 where x > threshold, else 0."""

    name = "binary"

    def __init__(self, threshold: float = 0.5) -> None:
        self.threshold = threshold

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return (x > self.threshold).to(x.dtype)


class StochasticBinary(Normalization):
    """Each batch is a fresh Bernoulli sample with the pixel intensities as probabilities.

    Training batches are resampled every time they are drawn; validation and test
    sets are sampled once with a fixed generator, so their metrics are comparable.
    """

    name = "stochastic_binary"

    def sample(self, x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        return torch.bernoulli(x, generator=generator)
