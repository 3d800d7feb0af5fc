"""Named variants that reproduce mistakes common in 2017 code (docs/QUESTION.md H4-H6, H9-H11).

They exist to reproduce failures, not to be used: each docstring says what went wrong.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from aelab.data.domains import UNIT
from aelab.errors import ConfigError
from aelab.losses.reconstruction import ReconstructionLoss


class ClampedProbabilityLoss(ReconstructionLoss):
    """Base of the 2017 probability-space losses: sigmoid outputs clamped at `eps` (0: none)."""

    target_range = UNIT
    output_activation = "sigmoid"
    max_eps = 1.0  # eps must lie in [0, max_eps)

    def __init__(self, eps: float, reduction: str = "mean") -> None:
        super().__init__(reduction)
        if not 0 <= eps < self.max_eps:
            raise ConfigError(f"loss.eps={eps} must be in [0, {self.max_eps:g}).")
        self.eps = eps


class NaivePositiveCrossEntropy(ClampedProbabilityLoss):
    """H4 (a mistake): the tutorial cross-entropy -t log p, the positive term only.

    p is the sigmoid output, clamped to [eps, 1] as `tf.log(tf.clip_by_value(y, 1e-10, 1.0))`
    did (the clamp passes no gradient outside the range); eps=0 takes the raw log: -inf
    where p rounds to 0, and NaN (0 * -inf) where the target is also 0. Per pixel it is
    minimised by p = 1 whatever the target: it rewards an all-white image.
    """

    name = "bce_naive_positive"
    max_eps = 1.0

    def __init__(self, eps: float = 1e-10, reduction: str = "mean") -> None:
        super().__init__(eps, reduction)

    def per_pixel(self, logits, recon, target):
        p = recon.clamp(self.eps, 1.0) if self.eps else recon
        return -target * torch.log(p)


class DoubleSigmoidBCE(ReconstructionLoss):
    """H5 (a mistake): the logits loss applied to outputs that already went through a sigmoid.

    `binary_cross_entropy_with_logits(recon, x)` with recon = sigmoid(z): the loss sees
    sigmoid(sigmoid(z)), which only spans (0.5, 0.731), so no target is matched and the
    gradient carries an extra factor p (1 - p). The shown reconstruction is recon.
    """

    name = "bce_double_sigmoid"
    target_range = UNIT
    output_activation = "sigmoid"

    def per_pixel(self, logits, recon, target):
        return F.binary_cross_entropy_with_logits(recon, target, reduction="none")


class ClampedProbabilityBCE(ClampedProbabilityLoss):
    """H6 (a mistake): BCE on float32 probabilities, -[x log p + (1 - x) log(1 - p)].

    p is the sigmoid output clamped to [eps, 1 - eps] as TensorFlow/Keras did
    (`epsilon()` = 1e-7): saturated pixels get zero gradient through the clamp.
    eps=0 takes raw logs: sigmoid outputs that round to exactly 1 (z > ~16.6 in float32)
    or 0 give an infinite loss, and NaN where the target makes it 0 * inf. The stable
    form is `bce` (from the logits).
    """

    name = "bce_clamped_probs"
    max_eps = 0.5

    def __init__(self, eps: float = 1e-7, reduction: str = "mean") -> None:
        super().__init__(eps, reduction)

    def per_pixel(self, logits, recon, target):
        p = recon.clamp(self.eps, 1 - self.eps) if self.eps else recon
        return -(target * torch.log(p) + (1 - target) * torch.log(1 - p))


class SoftmaxPixelCrossEntropy(ReconstructionLoss):
    """H9 (a mistake): softmax cross-entropy over an image's pixels, as a classifier's loss.

    `tf.nn.softmax_cross_entropy_with_logits(labels=x, logits=z)`: -sum_j x_j log softmax(z)_j
    per image (per pixel: -x_j log softmax(z)_j). It only sees the pixels' shares of the
    image's total, so adding a constant to every logit changes nothing: the brightness of
    the sigmoid output is left free, and pixels with x_j = 0 are only pushed down through
    the softmax's normaliser. The shown reconstruction is the sigmoid output.
    """

    name = "softmax_pixels"
    target_range = UNIT
    output_activation = "sigmoid"

    def per_pixel(self, logits, recon, target):
        log_share = logits.flatten(1).log_softmax(1).view_as(logits)
        return -target * log_share


class SwappedLogitsBCE(ReconstructionLoss):
    """H10 (a mistake): `sigmoid_cross_entropy_with_logits(labels=y_pred, logits=x)`.

    The prediction p (the sigmoid output) is used as the label and the input x as the
    logits: -[p log sigmoid(x) + (1 - p) log(1 - sigmoid(x))]. Its gradient in p is -x, so
    it drives every pixel with x > 0 to p = 1 and leaves the x = 0 pixels alone; MSE,
    symmetric in its arguments, survives the same swap.
    """

    name = "bce_swapped_logits"
    target_range = UNIT
    output_activation = "sigmoid"

    def per_pixel(self, logits, recon, target):
        return F.binary_cross_entropy_with_logits(target, recon, reduction="none")


class SwappedProbabilityBCE(ClampedProbabilityLoss):
    """H10 (a mistake), the probability form: Keras' `binary_crossentropy(y_pred, y_true)`.

    With the arguments swapped the prediction p is the target and the input x, clipped to
    [eps, 1 - eps] as Keras clips its prediction, the probability:
    -[p log x' + (1 - p) log(1 - x')]. Its gradient in p is -logit(x'): pixels above 1/2
    are driven to 1, those below to 0 (a binarised image), at a rate of up to
    logit(1 - eps) = 16.1 for eps = 1e-7.
    """

    name = "bce_swapped_probs"
    max_eps = 0.5

    def __init__(self, eps: float = 1e-7, reduction: str = "mean") -> None:
        super().__init__(eps, reduction)

    def per_pixel(self, logits, recon, target):
        x = target.clamp(self.eps, 1 - self.eps) if self.eps else target
        return -(recon * torch.log(x) + (1 - recon) * torch.log(1 - x))


class UnclampedProbabilityBCE(ClampedProbabilityBCE):
    """H11 (a mistake): BCE on the sigmoid probabilities with no clamp at all.

    -[x log p + (1 - x) log(1 - p)] on float32 p: once an output rounds to exactly 0 or 1
    the loss is inf (or NaN where x makes it 0 * inf) and the run diverges; the divergence
    guard stops it and names the step. `bce_clamped_probs` with `loss.eps=0`, as a name.
    """

    name = "bce_unclamped_probs"

    def __init__(self, reduction: str = "mean") -> None:
        super().__init__(0.0, reduction)
