"""MLP encoder and decoder (model=mlp, model=seed: 784-100-50-100-784)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from torch import nn

from aelab.models.autoencoder import EncoderDecoder
from aelab.models.parts import Part, Stage, pixels, positive_ints


class MLPEncoder(Part):
    """pixels -> hidden[0] -> ... -> hidden[-1] (the code), the activation after every layer."""

    def __init__(self, image_shape: Sequence[int], activation: Callable[[], nn.Module],
                 hidden: Sequence[int]) -> None:
        hidden = positive_ints("hidden", hidden, "[100,50]")
        widths = [pixels(image_shape), *hidden]
        stages = [Stage(nn.Linear(a, b), activation()) for a, b in zip(widths[:-1], widths[1:])]
        super().__init__(stages, image_shape, hidden[-1])


class MLPDecoder(Part):
    """The mirror of MLPEncoder(hidden): hidden[-1] (the code) -> ... -> hidden[0] -> pixels."""

    def __init__(self, image_shape: Sequence[int], activation: Callable[[], nn.Module],
                 hidden: Sequence[int]) -> None:
        hidden = positive_ints("hidden", hidden, "[100,50]")
        widths = [*reversed(hidden), pixels(image_shape)]
        stages = [Stage(nn.Linear(a, b), activation()) for a, b in zip(widths[:-2], widths[1:-1])]
        stages.append(Stage(nn.Linear(widths[-2], widths[-1]), None))
        super().__init__(stages, image_shape, hidden[-1])


def mlp_autoencoder(image_shape: Sequence[int], hidden: Sequence[int],
                    activation: Callable[[], nn.Module],
                    output_activation: str = "sigmoid") -> EncoderDecoder:
    """The mirrored MLP; `hidden=[100, 50]` on (1, 28, 28) is the seed net 784-100-50-100-784."""
    return EncoderDecoder(MLPEncoder(image_shape, activation, hidden),
                          MLPDecoder(image_shape, activation, hidden), output_activation)
