"""Arrange images into one grid image (torchvision's make_grid), and log it to TensorBoard fast."""

from __future__ import annotations

import io
import math
from typing import Any

import PIL.Image
import torch
import torch.nn.functional as F
from tensorboard.compat.proto.summary_pb2 import Summary
from torchvision.utils import make_grid


def image_grid(
    images: torch.Tensor, columns: int, pad: int = 1, pad_value: float = 1.0
) -> torch.Tensor:
    """(N, C, H, W) images -> one (C, H', W') grid with `columns` per row (at most N), each tile
    framed by `pad` pixels of `pad_value` (2 * pad between tiles), by torchvision's make_grid."""
    c = images.shape[1]
    if len(images) == 1:  # make_grid returns a lone image as it is, without padding
        return F.pad(images[0], (pad, pad, pad, pad), value=pad_value)
    # make_grid frames the whole grid with `padding` too (2 * pad here): the outer pad is cut;
    # it makes grey images RGB: their first channel is kept
    grid = make_grid(images, nrow=columns, padding=2 * pad, pad_value=pad_value)[:c]
    return grid[:, pad : grid.shape[1] - pad, pad : grid.shape[2] - pad]


def tile(
    images: torch.Tensor,
    columns: int,
    pad: int = 1,
    pad_value: float = 1.0,
    shape: tuple[int, int, int] | None = None,
) -> torch.Tensor:
    """(N, C*H*W) flat images of `shape` (C, H, W) -> `image_grid` of them. `shape` None:
    square grey images, (1, side, side) from the pixels."""
    n, pixels = images.shape
    if shape is None:
        side = math.isqrt(pixels)
        if side * side != pixels:
            raise ValueError(f"images of {pixels} pixels are not square; give their shape")
        shape = (1, side, side)
    if math.prod(shape) != pixels:
        raise ValueError(f"images of {pixels} values do not have shape {tuple(shape)}")
    return image_grid(images.reshape(n, *shape), columns, pad, pad_value)


def channels_last(image: torch.Tensor) -> torch.Tensor:
    """An image (H, W) or (C, H, W) with C = 1 or 3 as (H, W) grey or (H, W, 3) RGB."""
    if image.dim() == 3:
        if image.shape[0] not in (1, 3):
            raise ValueError(f"an image of {image.shape[0]} channels is neither grey nor RGB")
        image = image[0] if image.shape[0] == 1 else image.permute(1, 2, 0)
    return image


def image_pixels(image: torch.Tensor) -> Any:
    """An image in [0, 1], (H, W) or (C, H, W), as an 8-bit numpy array (H, W) or (H, W, 3)."""
    return (channels_last(image) * 255).round().to(torch.uint8).contiguous().numpy()


def add_png_image(writer: Any, tag: str, image: torch.Tensor, step: int) -> None:
    """Log an image in [0, 1], (H, W) or (C, H, W) with C = 1 or 3, as an 8-bit grey or RGB
    PNG, fast (SummaryWriter.add_image resamples and compresses an RGB copy: ~30 ms for the
    300x300 filter grid)."""
    image = channels_last(image)
    file_writer = getattr(writer, "file_writer", None)
    if file_writer is None:
        formats = "HW" if image.dim() == 2 else "HWC"
        writer.add_image(tag, image, global_step=step, dataformats=formats)
        return
    pixels = (image * 255).round().to(torch.uint8).contiguous().numpy()
    buffer = io.BytesIO()
    PIL.Image.fromarray(pixels).save(buffer, format="PNG", compress_level=1)
    png = Summary.Image(
        height=pixels.shape[0],
        width=pixels.shape[1],
        colorspace=1 if pixels.ndim == 2 else 3,
        encoded_image_string=buffer.getvalue(),
    )
    file_writer.add_summary(Summary(value=[Summary.Value(tag=tag, image=png)]), step)
