"""Image sources as uint8 tensors: MNIST and Fashion-MNIST through torchvision's datasets,
and a synthetic set.

torchvision reads the IDX files whole (no per-sample Python, no PIL). When they are missing,
torchvision is asked to download them; offline, the error names the folder searched, the
files expected and the two fixes; a file torchvision cannot read is named with the fix.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import torch

from aelab.errors import DataError

# dataset name -> torchvision class name (its folder under the data root)
TORCHVISION_NAMES = {"mnist": "MNIST", "fashion_mnist": "FashionMNIST"}
RAW_FILES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
             "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}


def _missing_message(name: str, raw_dir: Path, reason: str) -> str:
    files = ", ".join(f for pair in RAW_FILES.values() for f in pair)
    return (
        f"Dataset '{name}' not found: searched {raw_dir} for {files} ({reason}).\n"
        f"Fix it one of two ways:\n"
        f"  1. point data.root (or the AELAB_DATA_DIR environment variable) at a folder that holds "
        f"{raw_dir.parent.name}/raw/<those files>, e.g. AELAB_DATA_DIR=$HOME/data;\n"
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


def _dataset(name: str):
    import torchvision.datasets as tvd

    return getattr(tvd, TORCHVISION_NAMES[name])


def _read(name: str, root: Path, train: bool) -> torch.Tensor:
    """One official split's images through torchvision; DataError naming the files if they
    cannot be read (torchvision's own message is a bare reshape or int() error)."""
    try:
        return _dataset(name)(str(root), train=train, download=False).data
    except Exception as exc:  # RuntimeError (a shape), ValueError (a header), ...
        raw_dir = root / TORCHVISION_NAMES[name] / "raw"
        files = " and ".join(RAW_FILES["train" if train else "test"])
        raise DataError(
            f"{raw_dir}: {files} cannot be read ({type(exc).__name__}: "
            f"{str(exc).strip().splitlines()[0] if str(exc).strip() else 'no message'}): a file "
            f"is truncated or corrupt. Delete them and download them again."
        ) from None


def load_torchvision_images(name: str, root: str | Path, download: bool) -> dict[str, torch.Tensor]:
    """The official train and test images of `name` as uint8 tensors (N, 28, 28)."""
    root = Path(root).expanduser().resolve()
    if root.exists() and not root.is_dir():
        raise DataError(f"data.root={root} is not a directory; point data.root at a folder.")
    raw_dir = root / TORCHVISION_NAMES[name] / "raw"
    if not all((raw_dir / f).is_file() for pair in RAW_FILES.values() for f in pair):
        if not download:
            raise DataError(_missing_message(name, raw_dir, "data.download=false"))
        created = _first_missing(raw_dir)
        try:
            for train in (True, False):
                _dataset(name)(str(root), train=train, download=True)
        except Exception as exc:  # offline: URLError, HTTPError, RuntimeError from torchvision
            if created is not None:  # the folders torchvision made for the files it did not get
                shutil.rmtree(created, ignore_errors=True)
            reason = f"download failed: {type(exc).__name__}: {exc}"
            raise DataError(_missing_message(name, raw_dir, reason)) from None
    return {"train": _read(name, root, True), "test": _read(name, root, False)}


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
