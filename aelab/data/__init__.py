"""The data: MNIST, Fashion-MNIST, synthetic images or the user's own, normalised, in memory
as one tensor per split. Config `_target_`s name them here (`aelab.data.ImageData`,
`aelab.data.Unit`)."""

from aelab.data.datamodule import ImageData, StepChunks, TensorBatches
from aelab.data.normalization import (
    Binary,
    Clamped,
    Dequantized,
    Normalization,
    Standard,
    StochasticBinary,
    Symmetric,
    Unit,
)

__all__ = ["Binary", "Clamped", "Dequantized", "ImageData", "Normalization", "StepChunks",
           "StochasticBinary", "Standard", "Symmetric", "TensorBatches", "Unit"]
