"""Arrange flattened images into one grid image, and log it to TensorBoard fast."""

from __future__ import annotations

import io
import math
from typing import Any

import PIL.Image
import torch
import torch.nn.functional as F
from tensorboard.compat.proto.summary_pb2 import Summary


def tile(
    images: torch.Tensor,
    columns: int,
    pad: int = 1,
    pad_value: float = 1.0,
    shape: tuple[int, int, int] | None = None,
) -> torch.Tensor:
    """(N, C*H*W) flat images of `shape` (C, H, W) -> (C, H', W') grid with `columns` per row,
    padded between tiles. `shape` None: square grey images, (1, side, side) from the pixels."""
    n, pixels = images.shape
    if shape is None:
        side = math.isqrt(pixels)
        if side * side != pixels:
            raise ValueError(f"images of {pixels} pixels are not square; give their shape")
        shape = (1, side, side)
    c, h, w = shape
    if c * h * w != pixels:
        raise ValueError(f"images of {pixels} values do not have shape {tuple(shape)}")
    rows = math.ceil(n / columns)
    filler = images.new_full((rows * columns - n, pixels), pad_value)
    cells = torch.cat([images, filler]).view(rows, columns, c, h, w)
    cells = F.pad(cells, (pad, pad, pad, pad), value=pad_value)
    th, tw = h + 2 * pad, w + 2 * pad
    return cells.permute(2, 0, 3, 1, 4).reshape(c, rows * th, columns * tw)


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
