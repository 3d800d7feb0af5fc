"""Blob and weight-collapse metrics: pure functions of tensors.

Conventions: `pred` and `target` are (N, P) tensors in [0, 1] pixel units, `mean_image`
is the (P,) training mean image x_bar; a weight `w` is an nn.Linear weight of shape
(units, inputs), so row i holds the incoming weights of unit i; activations are
(samples, units). Every metric returns a 0-dim tensor on the inputs' device;
`aelab.diagnostics.verdict` works on their histories. docs/diagnostics.md says what each
number means.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from aelab.diagnostics.pixel import pixel_bce
from aelab.losses.reconstruction import binary_entropy  # H(t) in nats, 0 log 0 = 0

# |pre-activation| beyond which a unit sits in the flat tail of its activation:
# sigmoid(4.6) = 0.990, so outputs < 0.01 or > 0.99 (slope < 4% of its maximum);
# tanh(z) = 2 sigmoid(2z) - 1, so the same tail (1% of the output range at each end,
# tanh(2.3) = 0.980, slope < 4% of its maximum) starts at 4.6 / 2 = 2.3.
SIGMOID_SATURATION = 4.6
TANH_SATURATION = 2.3
GRAM_FLOOR = 1e-12  # singular_values: eigenvalues of the Gram below this x the largest are rounding


# ---------------------------------------------------------------- blob metrics


def explained_variance(
    pred: torch.Tensor, target: torch.Tensor, mean_image: torch.Tensor
) -> torch.Tensor:
    """EV = 1 - sum (y - x)^2 / sum (x - x_bar)^2: 0 for the mean image, 1 when perfect."""
    return 1 - (pred - target).square().sum() / (target - mean_image).square().sum()


def variance_ratio(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """R = sum_j Var_n(y_nj) / sum_j Var_n(x_nj): 0 for any constant output, 1 when perfect."""
    return (pred - pred.mean(0)).square().sum() / (target - target.mean(0)).square().sum()


def mean_image_distance(
    pred: torch.Tensor, target: torch.Tensor, mean_image: torch.Tensor
) -> torch.Tensor:
    """D = mean_n ||y_n - x_bar||^2 / mean_n ||x_n - x_bar||^2: 0 at x_bar, 1 when perfect."""
    return (pred - mean_image).square().sum() / (target - mean_image).square().sum()


def target_entropy(target: torch.Tensor) -> torch.Tensor:
    """Mean binary entropy of the targets (clamped to [0, 1]): the floor of the BCE."""
    return binary_entropy(target.clamp(0, 1)).mean()


def bce_excess(
    pred: torch.Tensor,
    target: torch.Tensor,
    logits: torch.Tensor | None = None,
    entropy: torch.Tensor | None = None,
) -> torch.Tensor:
    """Mean BCE minus the mean binary entropy of the targets (the per-pixel KL, >= 0).

    0 at a perfect reconstruction whatever the targets' grey levels; the BCE is scored
    as `aelab.diagnostics.pixel.pixel_bce` does (exact from logits when given, else clamped).
    `entropy`: `target_entropy(target)`, when already computed.
    """
    floor = target_entropy(target) if entropy is None else entropy
    return pixel_bce(pred, target, logits) - floor


def blob_metrics(
    pred: torch.Tensor,
    target: torch.Tensor,
    mean_image: torch.Tensor,
    logits: torch.Tensor | None = None,
    entropy: torch.Tensor | None = None,
) -> dict[str, torch.Tensor]:
    """EV, R, D, MSE and BCE excess of one prediction, keyed by short name."""
    return {
        "ev": explained_variance(pred, target, mean_image),
        "r": variance_ratio(pred, target),
        "d": mean_image_distance(pred, target, mean_image),
        "mse": (pred - target).square().mean(),
        "bce_excess": bce_excess(pred, target, logits, entropy),
    }


def mean_image_baseline(target: torch.Tensor, mean_image: torch.Tensor) -> dict[str, torch.Tensor]:
    """`blob_metrics` of the constant prediction x_bar: the "blob line" (EV = R = D = 0)."""
    return blob_metrics(mean_image.expand_as(target), target, mean_image)


# ---------------------------------------------------------------- weights


def norm_ratio(w: torch.Tensor, w0: torch.Tensor) -> torch.Tensor:
    """rho = ||W||_F / ||W0||_F: below 1 when the weights shrank."""
    return torch.linalg.vector_norm(w) / torch.linalg.vector_norm(w0)


def relative_change(w: torch.Tensor, w0: torch.Tensor) -> torch.Tensor:
    """||W - W0||_F / ||W0||_F: how far the weights moved from their initial values."""
    return torch.linalg.vector_norm(w - w0) / torch.linalg.vector_norm(w0)


def max_abs(w: torch.Tensor) -> torch.Tensor:
    """max |W|."""
    return w.abs().max()


def shrunk_fraction(w: torch.Tensor, w0: torch.Tensor, fraction: float = 0.1) -> torch.Tensor:
    """Fraction of units (rows) whose incoming-weight norm fell below `fraction` x its initial."""
    return (w.norm(dim=1) < fraction * w0.norm(dim=1)).float().mean()


def gain(w: torch.Tensor) -> torch.Tensor:
    """rms(W) x sqrt(fan-in) of (units, fan-in) rows: the factor by which the layer scales a
    unit-variance input. PyTorch's default init gives 1/sqrt(3) = 0.58, Glorot about 1,
    He sqrt(2); N(0, 1) weights on 784 inputs give 28."""
    return w.square().mean().sqrt() * math.sqrt(w.shape[1])


def singular_values(m: torch.Tensor) -> torch.Tensor:
    """m's singular values (float64) as the square roots of the eigenvalues of its smaller
    Gram matrix, those below GRAM_FLOOR x the largest set to 0 (the Gram's rounding).

    Here, not svdvals, because it was measured: 0.4 against 3.8 ms for a 100 x 784 W1, two
    ranks a measurement; the values agree to ~1e-7 of the largest."""
    d = m.double()
    gram = d @ d.T if d.shape[0] <= d.shape[1] else d.T @ d
    e = torch.linalg.eigvalsh(gram).flip(0).clamp(min=0.0)
    return torch.where(e > GRAM_FLOOR * e[0], e, 0.0).sqrt()


def effective_rank(m: torch.Tensor) -> torch.Tensor:
    """exp of the entropy of the normalised singular values (Roy & Vetterli 2007).

    1 for a rank-1 matrix, k for k equal singular values, at most rank(m); 0 for a zero
    matrix, NaN when m holds NaN or inf. Not centred: constant codes (a blob) give 1.
    """
    if not torch.isfinite(m).all():
        return m.new_tensor(math.nan)
    s = singular_values(m)
    total = s.sum()
    p = s / total
    rank = torch.where(total > 0, torch.exp(-torch.xlogy(p, p).sum()), 0.0)
    return rank.to(m.dtype)


# ---------------------------------------------------------------- units


def saturation_fraction(pre: torch.Tensor, threshold: float = SIGMOID_SATURATION) -> torch.Tensor:
    """Fraction of pre-activations with |z| > threshold (4.6 for sigmoid, 2.3 for tanh)."""
    return (pre.abs() > threshold).float().mean()


def exact_bound_count(y: torch.Tensor, low: float = 0.0, high: float = 1.0) -> torch.Tensor:
    """How many outputs are exactly `low` or `high` (float32 sigmoid outputs rounded to 0/1)."""
    return ((y == low) | (y == high)).sum()


def dead_fraction(pre: torch.Tensor) -> torch.Tensor:
    """Fraction of units (columns) whose pre-activation is <= 0 on every sample.

    For ReLU these units output 0 on all samples and get no gradient; for leaky ReLU,
    ELU and GELU they sit on the flat (or nearly flat) side of the activation.
    """
    return (pre <= 0).all(dim=0).float().mean()


def input_dependence(act: torch.Tensor) -> torch.Tensor:
    """Mean over units (columns) of the std over samples (rows): 0 when no unit sees the input."""
    return act.std(dim=0, unbiased=False).mean()


# ---------------------------------------------------------------- updates


def frobenius_norms(tensors: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """||T||_F of each tensor (one fused call: cheap enough for every optimiser step)."""
    return list(torch._foreach_norm(list(tensors)))


def update_ratios(
    weights: Sequence[torch.Tensor], previous: Sequence[torch.Tensor]
) -> list[torch.Tensor]:
    """Realised update ratio ||W_t - W_{t-1}||_F / ||W_{t-1}||_F of one optimiser step, per layer.

    Equal to lr ||dL/dW|| / ||W|| for plain SGD; for Adam and the others it is the step
    actually taken (lr ||dL/dW|| is not). Around 1e-3 is the textbook healthy value.
    """
    previous = list(previous)
    steps = torch._foreach_sub(list(weights), previous)
    return list(torch._foreach_div(torch._foreach_norm(steps), torch._foreach_norm(previous)))


def update_ratio(w: torch.Tensor, w_prev: torch.Tensor) -> torch.Tensor:
    """`update_ratios` of one layer."""
    return update_ratios([w], [w_prev])[0]
