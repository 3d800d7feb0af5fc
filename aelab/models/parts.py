"""The pieces every aelab network is made of: stages, parts, output activations.

Every part is a list of `Stage`s (a weight layer, with any reshape or pooling it needs, then
an activation), so the code that works on "the model" (diagnostics, init, the L2 penalty, the
filter image) asks the parts for their stages and weight layers instead of assuming an MLP.
Networks see and return flat images (N, C*H*W), the layout the data, losses and metrics use;
a conv part views them as (N, C, H, W) inside.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch import nn

from aelab.data.domains import POSITIVE, REAL, SYMMETRIC, UNIT, Range
from aelab.errors import ConfigError

# output activation name -> (module factory, range of its values)
OUTPUT_ACTIVATIONS: dict[str, tuple[Callable[[], nn.Module], Range]] = {
    "sigmoid": (nn.Sigmoid, UNIT),
    "tanh": (nn.Tanh, SYMMETRIC),
    "identity": (nn.Identity, REAL),
    "relu": (nn.ReLU, POSITIVE),
}
WEIGHT_LAYERS = (nn.Linear, nn.Conv2d, nn.ConvTranspose2d)
DOWNSAMPLING = ("stride", "pool")

Shape = tuple[int, int, int]  # (channels, height, width)


def auto_output_activation(target_range: Range) -> str:
    """The output activation that matches a target range: sigmoid, tanh or identity."""
    return {UNIT: "sigmoid", SYMMETRIC: "tanh"}.get(target_range, "identity")


def unit_rows(weight: torch.Tensor, layer: nn.Module) -> torch.Tensor:
    """`weight` of `layer` as (units, fan-in): row i holds the incoming weights of unit i
    (an output feature, or an output channel's kernel over all input channels)."""
    if isinstance(layer, nn.ConvTranspose2d):  # stored (in, out, kh, kw)
        weight = weight.transpose(0, 1)
    return weight.flatten(1)


class Stage(nn.Module):
    """One weight layer (with its reshape/pooling) and the activation after it (None: the
    network's output stage, whose activation the EncoderDecoder owns)."""

    def __init__(self, layer: nn.Module, activation: nn.Module | None) -> None:
        super().__init__()
        self.layer, self.activation = layer, activation

    @property
    def weight_layer(self) -> nn.Module:
        return next(m for m in self.layer.modules() if isinstance(m, WEIGHT_LAYERS))


class Part(nn.Module):
    """An encoder or a decoder: stages run in order. `code_dim` is the size of the code it
    outputs (an encoder) or takes (a decoder); `image_shape` the (C, H, W) of the images."""

    code_dim: int
    image_shape: Shape

    def __init__(self, stages: Sequence[Stage], image_shape: Sequence[int], code_dim: int) -> None:
        super().__init__()
        self.stages = nn.ModuleList(stages)
        self.image_shape = tuple(int(s) for s in image_shape)  # type: ignore[assignment]
        self.code_dim = int(code_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for stage in self.stages:
            x = stage.layer(x)
            if stage.activation is not None:
                x = stage.activation(x)
        return x


def positive_ints(name: str, values: Sequence[int] | int, example: str) -> list[int]:
    listed = list(values) if not isinstance(values, (int, str)) else None
    if not listed or any(not isinstance(v, int) or isinstance(v, bool) or v <= 0 for v in listed):
        raise ConfigError(f"model.{name}={listed if listed is not None else values} must be a "
                          f"non-empty list of positive integers, e.g. model.{name}={example}.")
    return listed


def pixels(image_shape: Sequence[int]) -> int:
    return math.prod(int(s) for s in image_shape)
