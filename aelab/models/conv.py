"""Convolutional encoder and decoder (model=conv, conv_mlp, conv_vae)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from torch import nn

from aelab.errors import ConfigError
from aelab.models.parts import DOWNSAMPLING, Part, Stage, positive_ints


def _check_conv(image_shape: Sequence[int], channels: list[int], kernel: int, downsample: str,
                code_dim: int) -> list[tuple[int, int]]:
    """The (H, W) after each encoder stage; refuse settings that cannot work, naming them."""
    if len(image_shape) != 3:
        raise ConfigError(f"model=conv needs images of shape (C, H, W); got {tuple(image_shape)}.")
    if not (isinstance(kernel, int) and kernel >= 1):
        raise ConfigError(f"model.kernel={kernel} must be a positive integer, e.g. 3.")
    if downsample not in DOWNSAMPLING:
        raise ConfigError(f"model.downsample={downsample!r} is unknown; choose stride or pool.")
    if not (isinstance(code_dim, int) and code_dim >= 1):
        raise ConfigError(f"model.code_dim={code_dim} must be a positive integer, e.g. 32.")
    sizes, (h, w) = [], (int(image_shape[1]), int(image_shape[2]))
    shrink = 2 * ((kernel - 1) // 2) - kernel  # a stride-2 conv with padding (kernel - 1) // 2
    for i, _ in enumerate(channels):
        if h < 2 or w < 2:
            raise ConfigError(
                f"model.channels={channels} halves {tuple(image_shape[1:])} images "
                f"{len(channels)} times, but they are {h}x{w} after {i}; use fewer stages "
                f"or a larger data.size."
            )
        if downsample == "stride":
            h, w = (h + shrink) // 2 + 1, (w + shrink) // 2 + 1
        else:
            h, w = h // 2, w // 2
        sizes.append((h, w))
    return sizes


class ConvEncoder(Part):
    """Conv stages that halve the image (stride 2, or stride 1 then 2x2 max pooling), each
    followed by the activation, then a linear layer to a flat code of `code_dim` (activated,
    like the MLP's code)."""

    def __init__(self, image_shape: Sequence[int], activation: Callable[[], nn.Module],
                 channels: Sequence[int] = (32, 64), kernel: int = 3, downsample: str = "stride",
                 code_dim: int = 32) -> None:
        channels = positive_ints("channels", channels, "[32,64]")
        sizes = _check_conv(image_shape, channels, kernel, downsample, code_dim)
        stages, c_in = [], int(image_shape[0])
        for i, c in enumerate(channels):
            if downsample == "stride":
                conv: nn.Module = nn.Conv2d(c_in, c, kernel, stride=2, padding=(kernel - 1) // 2)
            else:
                conv = nn.Sequential(nn.Conv2d(c_in, c, kernel, padding="same"), nn.MaxPool2d(2))
            layer = nn.Sequential(nn.Unflatten(1, tuple(image_shape)), conv) if i == 0 else conv
            stages.append(Stage(layer, activation()))
            c_in = c
        h, w = sizes[-1]
        code = nn.Sequential(nn.Flatten(1), nn.Linear(c_in * h * w, code_dim))
        stages.append(Stage(code, activation()))
        super().__init__(stages, image_shape, code_dim)


class ConvDecoder(Part):
    """The mirror of ConvEncoder: a linear layer from the code to the last stage's feature
    maps, then transposed convs (or 2x nearest upsampling + conv, for `downsample=pool`)
    back to the input size, the last one giving the logits of every pixel."""

    def __init__(self, image_shape: Sequence[int], activation: Callable[[], nn.Module],
                 channels: Sequence[int] = (32, 64), kernel: int = 3, downsample: str = "stride",
                 code_dim: int = 32) -> None:
        channels = positive_ints("channels", channels, "[32,64]")
        sizes = _check_conv(image_shape, channels, kernel, downsample, code_dim)
        targets = [(int(image_shape[1]), int(image_shape[2])), *sizes[:-1]]  # each stage's output
        outs = [int(image_shape[0]), *channels[:-1]]
        h, w = sizes[-1]
        stages = [Stage(nn.Linear(code_dim, channels[-1] * h * w), activation())]
        c_in, shape_in = channels[-1], (channels[-1], h, w)
        for i in reversed(range(len(channels))):
            (th, tw), c = targets[i], outs[i]
            if downsample == "stride":
                pad = (kernel - 1) // 2
                grown = (h - 1) * 2 - 2 * pad + kernel, (w - 1) * 2 - 2 * pad + kernel
                extra = (th - grown[0], tw - grown[1])  # in [0, 2) for this encoder's sizes
                conv: nn.Module = nn.ConvTranspose2d(c_in, c, kernel, stride=2, padding=pad,
                                                     output_padding=extra)
            else:
                conv = nn.Sequential(nn.Upsample(size=(th, tw), mode="nearest"),
                                     nn.Conv2d(c_in, c, kernel, padding="same"))
            parts = [nn.Unflatten(1, shape_in), conv] if i == len(channels) - 1 else [conv]
            last = i == 0
            if last:
                parts.append(nn.Flatten(1))
            stages.append(Stage(nn.Sequential(*parts) if len(parts) > 1 else conv,
                                None if last else activation()))
            c_in, (h, w) = c, (th, tw)
        super().__init__(stages, image_shape, code_dim)
