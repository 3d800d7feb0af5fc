"""Reconstruction losses (each with the targets it accepts), the 2017 mistakes as named
variants, and a VAE's ELBO and IWAE bound. Config `_target_`s name them here
(`aelab.losses.BCE`, `aelab.losses.NaivePositiveCrossEntropy`)."""

from aelab.losses.mistakes import (
    ClampedProbabilityBCE,
    DoubleSigmoidBCE,
    NaivePositiveCrossEntropy,
    SoftmaxPixelCrossEntropy,
    SwappedLogitsBCE,
    SwappedProbabilityBCE,
    UnclampedProbabilityBCE,
)
from aelab.losses.reconstruction import (
    BCE,
    L1,
    LIKELIHOODS,
    MSE,
    REDUCTIONS,
    BCEExcess,
    ContinuousBernoulli,
    GaussianNLL,
    Huber,
    ReconstructionLoss,
    binary_entropy,
    cb_log_norm,
    cb_mean,
    reduce,
)

__all__ = [
    "BCE", "L1", "LIKELIHOODS", "MSE", "REDUCTIONS", "BCEExcess", "ClampedProbabilityBCE",
    "ContinuousBernoulli", "DoubleSigmoidBCE", "GaussianNLL", "Huber",
    "NaivePositiveCrossEntropy", "ReconstructionLoss", "SoftmaxPixelCrossEntropy",
    "SwappedLogitsBCE", "SwappedProbabilityBCE", "UnclampedProbabilityBCE", "binary_entropy",
    "cb_log_norm", "cb_mean", "reduce",
]
