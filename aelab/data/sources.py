"""Image sources as uint8 tensors: MNIST and Fashion-MNIST from IDX files, and a synthetic set.

The IDX files are read whole into one tensor (no per-sample Python, no PIL).
When they are missing, torchvision is asked to download them; offline, the
error names the folder searched, the files expected and the two fixes.
"""

from __future__ import annotations

import shutil
import struct
from pathlib import Path

import torch

from aelab.errors import DataError

# dataset name -> torchvision class name (its folder under the data root)
TORCHVISION_NAMES = {"mnist": "MNIST", "fashion_mnist": "FashionMNIST"}
IMAGE_FILES = {"train": "train-images-idx3-ubyte", "test": "t10k-images-idx3-ubyte"}
IDX_IMAGE_MAGIC = 2051


def read_idx_images(path: Path) -> torch.Tensor:
    """Read an IDX3 image file into a uint8 tensor (N, rows, cols), checking its size."""
    raw = path.read_bytes()
    if len(raw) < 16:
        raise DataError(f"{path} is truncated ({len(raw)} bytes, the header alone is 16).")
    magic, n, rows, cols = struct.unpack(">IIII", raw[:16])
    if magic != IDX_IMAGE_MAGIC:
        raise DataError(f"{path} is not an IDX image file (magic number {magic}, expected 2051).")
    expected = 16 + n * rows * cols
    if len(raw) != expected:
        raise DataError(
            f"{path} is truncated or corrupt: {len(raw)} bytes, its header promises {expected} "
            f"({n} images of {rows}x{cols}). Delete it and download it again."
        )
    return torch.frombuffer(bytearray(raw), dtype=torch.uint8, offset=16).view(n, rows, cols)


def _missing_message(name: str, raw_dir: Path, reason: str) -> str:
    files = ", ".join(IMAGE_FILES.values())
    return (
        f"Dataset '{name}' not found: searched {raw_dir} for {files} ({reason}).\n"
        f"Fix it one of two ways:\n"
        f"  1. point data.root (or the AELAB_DATA_DIR environment variable) at a folder that holds "
        f"{raw_dir.parent.name}/raw/<those files>, e.g. AELAB_DATA_DIR=../shared/data;\n"
        f"  2. run once with internet access and data.download=true, so torchvision downloads "
        f"them into {raw_dir.parent.parent}."
    )


def _first_missing(path: Path) -> Path | None:
    """The outermost folder of `path` (itself included) that does not exist yet, or None."""
    missing = None
    for folder in (path, *path.parents):
        if folder.exists():
            break
        missing = folder
    return missing


def _download(name: str, root: Path) -> None:
    import torchvision.datasets as tvd

    cls = getattr(tvd, TORCHVISION_NAMES[name])
    for train in (True, False):
        cls(str(root), train=train, download=True)


def load_torchvision_images(name: str, root: str | Path, download: bool) -> dict[str, torch.Tensor]:
    """The official train and test images of `name` as uint8 tensors (N, 28, 28)."""
    root = Path(root).expanduser().resolve()
    if root.exists() and not root.is_dir():
        raise DataError(f"data.root={root} is not a directory; point data.root at a folder.")
    raw_dir = root / TORCHVISION_NAMES[name] / "raw"
    paths = {split: raw_dir / f for split, f in IMAGE_FILES.items()}
    if not all(p.is_file() for p in paths.values()):
        if not download:
            raise DataError(_missing_message(name, raw_dir, "data.download=false"))
        created = _first_missing(raw_dir)
        try:
            _download(name, root)
        except Exception as exc:  # offline: URLError, HTTPError, RuntimeError from torchvision
            if created is not None:  # the folders torchvision made for the files it did not get
                shutil.rmtree(created, ignore_errors=True)
            reason = f"download failed: {type(exc).__name__}: {exc}"
            raise DataError(_missing_message(name, raw_dir, reason)) from None
    return {split: read_idx_images(p) for split, p in paths.items()}


def synthetic_images(n: int, seed: int, size: int = 28, blobs: int = 3) -> torch.Tensor:
    """`n` grey-level images in [0, 1]: sums of Gaussian bumps at random places and widths.

    Structured (a handful of numbers per image) so an autoencoder can learn it,
    and generated from `seed` alone, so tests need no files.
    """
    g = torch.Generator().manual_seed(seed)
    grid = torch.arange(size, dtype=torch.float32)
    centre = torch.rand(n, blobs, 2, generator=g) * (size * 0.6) + size * 0.2
    width = torch.rand(n, blobs, 1, 1, generator=g) * 2.5 + 1.5
    amp = torch.rand(n, blobs, 1, 1, generator=g) * 0.7 + 0.3
    dy = (grid.view(1, 1, size, 1) - centre[..., 0, None, None]) ** 2
    dx = (grid.view(1, 1, 1, size) - centre[..., 1, None, None]) ** 2
    images = (amp * torch.exp(-(dy + dx) / (2 * width**2))).sum(1).clamp(0, 1)
    return images
