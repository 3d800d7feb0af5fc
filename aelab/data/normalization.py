"""Pixel normalisations: map [0, 1] images to the values the network sees and must reconstruct.

Every normalisation encodes whole in-memory tensors once (`encode`), maps
reconstructions back to [0, 1] pixel units for comparable metrics (`decode`),
and declares the range of its targets. `stochastic_binary` and `dequantized` also act
per batch: a fresh Bernoulli sample of the intensities, or fresh uniform noise within
each 8-bit level.
"""

from __future__ import annotations

import torch

from aelab.data.domains import REAL, SYMMETRIC, UNIT, Range
from aelab.errors import ConfigError, DataError


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

    def state_dict(self) -> dict[str, float | torch.Tensor]:
        """The statistics `fit` learnt (kept in checkpoints, so a trained model loads without
        its data); {} for a normalisation that learns none."""
        return {}

    def load_state_dict(self, state: dict[str, float | torch.Tensor]) -> None:
        """Restore what `state_dict` gave."""


Unit = Normalization


class Standard(Normalization):
    """Subtract the training set's pixel mean and divide by its std.

    Grey images: one scalar each (Python floats). Colour images: one per channel, held as
    (C*H*W,) vectors that broadcast over the flat (N, C*H*W) layout of encode and decode.
    """

    name = "standard"
    target_range = REAL

    def __init__(self) -> None:
        self.mean: float | torch.Tensor = 0.0
        self.std: float | torch.Tensor = 1.0

    def fit(self, train: torch.Tensor) -> Standard:
        """`train`: the [0, 1] training images, (N, C, H, W) (or any shape: one channel)."""
        if train.dim() == 4 and train.shape[1] > 1:
            std = train.std(dim=(0, 2, 3))
            if not bool((std > 0).all()):
                flat = ", ".join(str(c) for c in (std <= 0).nonzero().flatten().tolist())
                raise DataError(
                    f"normalization=standard: channel {flat} of the training images is "
                    f"constant (std 0), so it cannot be standardised; use normalization=unit."
                )
            pixels = train.shape[2] * train.shape[3]
            self.mean = train.mean(dim=(0, 2, 3)).repeat_interleave(pixels)
            self.std = std.repeat_interleave(pixels)
            return self
        self.mean = float(train.mean())
        self.std = float(train.std())
        return self

    def state_dict(self) -> dict[str, float | torch.Tensor]:
        return {"mean": self.mean, "std": self.std}

    def load_state_dict(self, state: dict[str, float | torch.Tensor]) -> None:
        self.mean, self.std = state["mean"], state["std"]

    def _stats(self, like: torch.Tensor) -> tuple[float | torch.Tensor, float | torch.Tensor]:
        """mean and std on the device of `like` (per-channel vectors move there once)."""
        if isinstance(self.mean, torch.Tensor) and self.mean.device != like.device:
            self.mean, self.std = self.mean.to(like.device), self.std.to(like.device)
        return self.mean, self.std

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        mean, std = self._stats(x)
        return (x - mean) / std

    def decode(self, y: torch.Tensor) -> torch.Tensor:
        mean, std = self._stats(y)
        return y * std + mean


class Symmetric(Normalization):
    """Scale [0, 1] to [-1, 1]."""

    name = "symmetric"
    target_range = SYMMETRIC

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return x * 2 - 1

    def decode(self, y: torch.Tensor) -> torch.Tensor:
        return (y + 1) / 2


class Clamped(Normalization):
    """Intensities clamped to [eps, 1 - eps]: no pixel is exactly 0 or 1, so a likelihood whose
    density is unbounded there (the continuous Bernoulli) has a finite optimum at every pixel.
    Metrics compare reconstructions with the clamped targets (at most eps from the raw ones)."""

    name = "clamped"

    def __init__(self, eps: float = 0.01) -> None:
        if not 0 < eps < 0.5:
            raise ConfigError(f"normalization.eps={eps} must be in (0, 0.5): pixels are clamped "
                              f"to [eps, 1 - eps].")
        self.eps = eps

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return x.clamp(self.eps, 1 - self.eps)


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


class Dequantized(Normalization):
    """8-bit intensities k/255 become (k + u) / 256, u ~ U(0, 1) afresh per training batch.

    Data with a point mass (MNIST's exact 0s and 1s) let a continuous likelihood's density
    grow without bound there (a Gaussian's as sigma -> 0, the continuous Bernoulli's at
    0 and 1); on dequantised data it cannot, so continuous likelihoods compare in nats
    (Theis et al. 2016): log P(k) >= E_u log p((k + u) / 256) - log 256 per pixel.
    Validation and test sets are sampled once with a fixed generator.
    """

    name = "dequantized"
    levels = 256

    def sample(self, x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        k = torch.round(x * (self.levels - 1))
        u = torch.rand(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        return (k + u) / self.levels
