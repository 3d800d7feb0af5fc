"""The networks: parts (stages of a weight layer and an activation), MLP and conv encoders and
decoders, the VAE encoder, the paired autoencoder, and initialisations. Config `_target_`s
name them here (`aelab.models.MLPEncoder`, `aelab.models.init_normal`)."""

from aelab.models.autoencoder import EncoderDecoder
from aelab.models.conv import ConvDecoder, ConvEncoder
from aelab.models.init import init_default, init_kaiming, init_normal, init_xavier
from aelab.models.mlp import MLPDecoder, MLPEncoder, mlp_autoencoder
from aelab.models.parts import (
    OUTPUT_ACTIVATIONS,
    WEIGHT_LAYERS,
    Part,
    Stage,
    auto_output_activation,
    unit_rows,
)
from aelab.models.variational import PosteriorMean, VariationalEncoder

__all__ = [
    "OUTPUT_ACTIVATIONS", "WEIGHT_LAYERS", "ConvDecoder", "ConvEncoder", "EncoderDecoder",
    "MLPDecoder", "MLPEncoder", "Part", "PosteriorMean", "Stage", "VariationalEncoder",
    "auto_output_activation", "init_default", "init_kaiming", "init_normal", "init_xavier",
    "mlp_autoencoder", "unit_rows",
]
