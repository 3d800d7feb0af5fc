"""Your own images: a folder of PNG/JPEG files (`data=folder`) or one array file
(`data=tensor_file`: .npy, .npz or .pt), each read once, whole, into one (N, C, H, W) tensor.

A folder gives uint8; an array file gives uint8 or float32 in [0, 1]. Anything that cannot
make such a tensor is refused with a DataError naming the file and the option to change.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from aelab.errors import ConfigError, DataError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg")  # matched case-insensitively
ARRAY_EXTENSIONS = (".npy", ".npz", ".pt")
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
PNG_COLOUR_CHANNELS = {0: 1, 2: 3, 3: 3, 4: 1, 6: 3}  # IHDR colour type -> channels, no alpha
SAVERS = {".npy": "save", ".npz": "savez"}
LAYOUTS = "N x H x W (grey), N x C x H x W or N x H x W x C, with C = 1 (grey) or 3 (colour)"


def resolve_path(path: Any, kind: str) -> Path:
    """`data.path` as an existing path; refused when unset or not found."""
    if path is None or str(path) == "":
        what = "a folder of PNG/JPEG images" if kind == "folder" else "a .npy, .npz or .pt file"
        raise ConfigError(f"data={kind} needs data.path=PATH, {what}.")
    resolved = Path(str(path)).expanduser().resolve()
    if not resolved.exists():
        raise DataError(f"data.path={path} not found (looked for {resolved}).")
    return resolved


def find_images(folder: Path) -> list[Path]:
    """The PNG/JPEG files under `folder`, recursively, sorted by relative path; names that
    start with "." (hidden files and folders, macOS `._` copies) are skipped."""
    found = [
        p for p in folder.rglob("*")
        if p.suffix.lower() in IMAGE_EXTENSIONS
        and not any(part.startswith(".") for part in p.relative_to(folder).parts)
        and p.is_file()
    ]
    return sorted(found, key=lambda p: p.relative_to(folder).as_posix())


def _native_channels(raw: bytes) -> int | None:
    """1 or 3 from a PNG header's colour type (a palette counts as colour); None otherwise."""
    if raw[:8] == PNG_SIGNATURE and len(raw) > 25:
        return PNG_COLOUR_CHANNELS.get(raw[25])
    return None


def decode_file(path: Path, channels: int | None) -> torch.Tensor:
    """One image file as uint8 (C, H, W), C = `channels` or, when None, 1 for grey files and 3
    for colour ones (alpha is dropped; 16-bit PNGs keep their top 8 bits)."""
    from torchvision.io import ImageReadMode, decode_image

    try:
        raw = path.read_bytes()
        data = torch.frombuffer(bytearray(raw), dtype=torch.uint8)
        if channels is None:
            channels = _native_channels(raw)
        if channels is None:  # a JPEG: grey, colour, or CMYK (decoded again as RGB)
            image = decode_image(data, mode=ImageReadMode.UNCHANGED)
            channels = 1 if image.shape[0] in (1, 2) else 3
            if image.shape[0] == channels:
                return _to_uint8(image)
        mode = ImageReadMode.GRAY if channels == 1 else ImageReadMode.RGB
        return _to_uint8(decode_image(data, mode=mode))
    except (RuntimeError, ValueError, OSError) as exc:  # torchvision's messages name its C++
        raise DataError(
            f"{path} cannot be read as an image (torchvision could not decode it: "
            f"{type(exc).__name__}); it is corrupt or not a PNG/JPEG file. Remove or replace "
            f"it, or point data.path at a folder without it."
        ) from None


def _to_uint8(image: torch.Tensor) -> torch.Tensor:
    if image.dtype == torch.uint16:  # 16-bit PNG
        return (image.to(torch.int32) >> 8).to(torch.uint8)
    return image


def _resize(images: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    from torchvision.transforms.v2 import functional as F

    if tuple(images.shape[-2:]) == size:
        return images
    resized = F.resize(images, list(size), antialias=True)
    return resized if resized.dtype == torch.uint8 else resized.clamp_(0, 1)


def _hw(image: torch.Tensor) -> str:
    return f"{image.shape[-2]}x{image.shape[-1]}"


def load_image_folder(
    path: Any, size: tuple[int, int] | None = None, channels: int | None = None
) -> torch.Tensor:
    """Every PNG/JPEG under `path` (sub-folders too: one per class is fine, the classes are
    not used) as one uint8 tensor (N, C, H, W), resized to `size` (H, W) when given."""
    folder = resolve_path(path, "folder")
    if not folder.is_dir():
        raise DataError(
            f"data.path={path} is not a folder; data=folder reads a folder of PNG/JPEG images "
            f"(for a .npy, .npz or .pt file use data=tensor_file)."
        )
    files = find_images(folder)
    if not files:
        raise DataError(
            f"data.path={path}: no images found in {folder} or its sub-folders (searched for "
            f"{', '.join('*' + e for e in IMAGE_EXTENSIONS)}, any case); point data.path at a "
            f"folder of PNG/JPEG images."
        )
    images = [decode_file(f, channels) for f in files]
    if channels is None:
        first = {}
        for f, image in zip(files, images):
            first.setdefault(image.shape[0], f)
        if len(first) > 1:
            raise DataError(
                f"data.path={path} mixes grey and colour images: {first[1]} is grey (1 "
                f"channel), {first[3]} is colour (3 channels); set data.channels=1 to read "
                f"them all as grey or data.channels=3 to read them all as colour."
            )
    if size is None:
        base = images[0].shape[-2:]
        odd = next((i for i, im in enumerate(images) if im.shape[-2:] != base), None)
        if odd is not None:
            raise DataError(
                f"data.path={path} holds images of different sizes: {files[0]} is "
                f"{_hw(images[0])} (HxW), {files[odd]} is {_hw(images[odd])}; set "
                f"data.size=[H,W] (e.g. data.size=[{base[0]},{base[1]}]) to resize them all."
            )
    else:
        images = [_resize(im, size) for im in images]
    return torch.stack(images)


def _choose(names: list[str], key: str | None, path: Path) -> str:
    """The name of the array to read from an .npz (or a dict saved in a .pt): `key`, or the
    only one."""
    if key is None:
        if len(names) == 1:
            return names[0]
        if not names:
            raise DataError(f"data.path={path} holds no arrays.")
        raise DataError(
            f"data.path={path} holds {len(names)} arrays ({', '.join(names)}); set data.key "
            f"to the one with the images, e.g. data.key={names[0]}."
        )
    if key not in names:
        raise DataError(f"data.key={key} is not in {path}; it holds: {', '.join(names)}.")
    return key


def _read_array(path: Path, key: str | None) -> tuple[Any, str]:
    """The array or tensor in `path` and how to name it in messages."""
    suffix = path.suffix.lower()
    if suffix not in ARRAY_EXTENSIONS:
        raise DataError(
            f"data.path={path} is not a .npy, .npz or .pt file; data=tensor_file reads those "
            f"(for a folder of PNG/JPEG images use data=folder)."
        )
    if suffix == ".npy" and key is not None:
        raise ConfigError(f"data.key={key}: a .npy file holds one array; remove data.key.")
    try:
        if suffix == ".npy":
            return np.load(path, allow_pickle=False), f"data.path={path}"
        if suffix == ".npz":
            with np.load(path, allow_pickle=False) as archive:
                name = _choose(list(archive.files), key, path)
                return archive[name], f"data.path={path} (data.key={name})"
    except DataError:
        raise
    except Exception as exc:  # corrupt files: ValueError, OSError, EOFError, BadZipFile
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise DataError(
            f"data.path={path} cannot be read as a {suffix} file ({type(exc).__name__}"
            f"{': ' + reason[:200] if reason else ''}); it is read without pickles "
            f"(allow_pickle=False): save numeric arrays with numpy.{SAVERS[suffix]}."
        ) from None
    try:
        items = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # not a torch file (UnpicklingError, RuntimeError), or a pickle
        raise DataError(
            f"data.path={path} cannot be read as a .pt file (torch.load with weights_only=True "
            f"failed: {type(exc).__name__}); save a tensor, or a dict of tensors, with "
            f"torch.save(images, path)."
        ) from None
    if isinstance(items, torch.Tensor):
        if key is not None:
            raise ConfigError(f"data.key={key}: {path} holds one tensor; remove data.key.")
        return items, f"data.path={path}"
    if not isinstance(items, Mapping):
        raise DataError(
            f"data.path={path} holds a {type(items).__name__}; a .pt file must hold a tensor "
            f"(torch.save(images, path)) or a dict of tensors (choose one with data.key)."
        )
    name = _choose([str(k) for k in items], key, path)
    return items[name], f"data.path={path} (data.key={name})"


def _check_0_255(lo: int, hi: int, source: str) -> None:
    if lo < 0 or hi > 255:
        raise DataError(
            f"{source}: integer images must be in 0-255, but its values run from {lo} to {hi}; "
            f"rescale them to 0-255 (uint8) or to floats in [0, 1]."
        )


def _unit_or_uint8(array: Any, source: str) -> torch.Tensor:
    """uint8 as is; other integers and booleans within 0-255 as uint8; floats in [0, 1] as
    float32. Anything else is refused."""
    wrong = (
        "; images must be uint8 (0-255) or float in [0, 1] (other integer types with values "
        "in 0-255, and booleans, are accepted too)."
    )
    if isinstance(array, np.ndarray):
        kind = array.dtype.kind
        if kind == "b":
            array = array.astype(np.uint8) * np.uint8(255)
        elif kind in "ui":
            if array.dtype != np.uint8:
                _check_0_255(int(array.min()), int(array.max()), source)
                array = array.astype(np.uint8)
        elif kind == "f":
            array = array.astype(np.float32)
        else:
            raise DataError(f"{source} has dtype {array.dtype}" + wrong)
        tensor = torch.from_numpy(np.ascontiguousarray(array))
    elif isinstance(array, torch.Tensor):
        tensor = array.detach().cpu()
        if tensor.dtype == torch.bool:
            tensor = tensor.to(torch.uint8) * 255
        elif tensor.is_complex():
            raise DataError(f"{source} has dtype {tensor.dtype}" + wrong)
        elif tensor.is_floating_point():
            tensor = tensor.float()
        elif tensor.dtype != torch.uint8:
            wide = tensor.to(torch.int64)
            _check_0_255(int(wide.min()), int(wide.max()), source)
            tensor = wide.to(torch.uint8)
    else:
        raise DataError(f"{source} holds a {type(array).__name__}, not an array" + wrong)
    if tensor.is_floating_point():
        if not bool(torch.isfinite(tensor).all()):
            raise DataError(f"{source} holds NaN or infinite values; float images must be in "
                            f"[0, 1].")
        lo, hi = float(tensor.min()), float(tensor.max())
        if lo < 0 or hi > 1:
            raise DataError(
                f"{source}: float images must be in [0, 1], but its values run from {lo:g} to "
                f"{hi:g}; divide by 255 if they are 0-255 values, or rescale them to [0, 1]."
            )
    return tensor


def _layout(shape: tuple[int, ...], source: str) -> str:
    """"NHW", "NCHW" or "NHWC" for an array of `shape`; the second dimension is read as the
    channels when it is 1 or 3, else the last one."""
    if len(shape) == 3:
        return "NHW"
    if len(shape) == 4:
        if shape[1] in (1, 3):
            return "NCHW"
        if shape[3] in (1, 3):
            return "NHWC"
        raise DataError(
            f"{source} has shape {list(shape)}: neither its second nor its last dimension is "
            f"1 or 3 channels; expected {LAYOUTS}."
        )
    raise DataError(
        f"{source} has {len(shape)} dimensions (shape {list(shape)}); expected {LAYOUTS}."
    )


def load_tensor_file(
    path: Any,
    key: str | None = None,
    size: tuple[int, int] | None = None,
    channels: int | None = None,
) -> torch.Tensor:
    """The images in a .npy, .npz or .pt file as (N, C, H, W): uint8, or float32 in [0, 1];
    converted to `channels` (grey to colour by copying, colour to grey by luminance) and
    resized to `size` (H, W) when given."""
    file = resolve_path(path, "tensor_file")
    if file.is_dir():
        raise DataError(
            f"data.path={path} is a folder; data=tensor_file reads one .npy, .npz or .pt file "
            f"(for a folder of PNG/JPEG images use data=folder)."
        )
    array, source = _read_array(file, key)
    shape = tuple(array.shape) if hasattr(array, "shape") else ()
    layout = _layout(shape, source)
    if 0 in shape:
        raise DataError(f"{source} has shape {list(shape)}: it holds no images.")
    images = _unit_or_uint8(array, source)
    if layout == "NHW":
        images = images.unsqueeze(1)
    elif layout == "NHWC":
        images = images.permute(0, 3, 1, 2)
    images = images.contiguous()
    if channels is not None and images.shape[1] != channels:
        from torchvision.transforms.v2 import functional as F

        images = images.expand(-1, 3, -1, -1) if channels == 3 else F.rgb_to_grayscale(images)
        images = images.contiguous()
    return _resize(images, size) if size is not None else images
