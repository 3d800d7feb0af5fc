"""Arrange flattened square images into one grid image for TensorBoard."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def tile(images: torch.Tensor, columns: int, pad: int = 1, pad_value: float = 1.0) -> torch.Tensor:
    """(N, side*side) images -> (1, H, W) grid with `columns` per row, padded between tiles."""
    n, pixels = images.shape
    side = math.isqrt(pixels)
    if side * side != pixels:
        raise ValueError(f"images of {pixels} pixels are not square")
    rows = math.ceil(n / columns)
    filler = images.new_full((rows * columns - n, pixels), pad_value)
    cells = torch.cat([images, filler]).view(rows, columns, side, side)
    cells = F.pad(cells, (pad, pad, pad, pad), value=pad_value)
    s = side + 2 * pad
    return cells.permute(0, 2, 1, 3).reshape(1, rows * s, columns * s)
