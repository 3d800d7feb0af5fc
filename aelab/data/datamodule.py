"""In-memory data: one float tensor per split on the training device, batches are slices."""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterator

import lightning as L
import torch

from aelab.config.checks import check_fraction, check_val_size, data_channels, data_size
from aelab.data.image_files import load_image_folder, load_tensor_file
from aelab.data.normalization import Normalization
from aelab.data.sources import TORCHVISION_NAMES, load_torchvision_images, synthetic_images
from aelab.errors import ConfigError

OWN = ("folder", "tensor_file")  # the user's own images: no official test split
DATASETS = (*TORCHVISION_NAMES, "synthetic", *OWN)
OWN_OPTIONS = ("path", "size", "channels", "key", "test_fraction")


def count(value: int | float, n: int) -> int:
    """A number of images: `value` itself, or a fraction of `n` (at least 1)."""
    return value if isinstance(value, int) else max(1, round(value * n))


class TensorBatches:
    """Iterate over `data` in batches of index slices; reshuffled every epoch.

    The permutation and any per-batch sampling (stochastic binarisation) use a
    generator seeded by (seed, epoch), so an epoch's batches are the same after a
    resume as in an uninterrupted run.
    """

    def __init__(
        self,
        data: torch.Tensor,
        batch_size: int,
        shuffle: bool = False,
        sample: Callable[[torch.Tensor, torch.Generator], torch.Tensor] | None = None,
        seed: int = 0,
        epoch: Callable[[], int] = lambda: 0,
    ) -> None:
        self.data, self.batch_size, self.shuffle = data, batch_size, shuffle
        self.sample, self.seed, self.epoch = sample, seed, epoch

    def __len__(self) -> int:
        return math.ceil(len(self.data) / self.batch_size)

    def __iter__(self) -> Iterator[torch.Tensor]:
        data, bs = self.data, self.batch_size
        g = torch.Generator(device=data.device)
        g.manual_seed(self.seed * 100_003 + self.epoch())
        order = torch.randperm(len(data), generator=g, device=data.device) if self.shuffle else None
        for start in range(0, len(data), bs):
            batch = (
                data[order[start : start + bs]] if order is not None else data[start : start + bs]
            )
            yield self.sample(batch, g) if self.sample is not None else batch


class StepChunks:
    """The training loader: `batches` in lists of `steps_per_call` (the last may be shorter).

    Each list is one call of the module's `training_step`, which takes one optimiser step per
    batch in it: Lightning's per-batch work is paid once per list, not once per step.
    """

    def __init__(self, batches: TensorBatches, steps_per_call: int) -> None:
        self.batches, self.steps_per_call = batches, steps_per_call

    def __len__(self) -> int:
        return math.ceil(len(self.batches) / self.steps_per_call)

    @property
    def steps(self) -> int:
        """Optimiser steps per epoch (batches, not lists)."""
        return len(self.batches)

    def __iter__(self) -> Iterator[list[torch.Tensor]]:
        batches = iter(self.batches)
        while chunk := list(itertools.islice(batches, self.steps_per_call)):
            yield chunk


class ImageData(L.LightningDataModule):
    """Train/val/test images of shape (C, H, W), normalised once, held as flat (N, C*H*W)
    float tensors.

    Train and val come from the official train set, split with `split_seed`;
    test is the official test set. `train_size`/`test_size` take a prefix
    (and set the sizes of the `synthetic` set). `val_size` is a number of images or a
    fraction of the train pool.

    `folder` (PNG/JPEG files under `path`) and `tensor_file` (a .npy, .npz or .pt file at
    `path`, `key` choosing an array) are the user's own images: a `test_fraction` of them,
    drawn with `split_seed`, is the test set and the rest the train pool; `size` (H, W)
    resizes them, `channels` (1 or 3) converts them.
    """

    def __init__(
        self,
        name: str,
        normalization: Normalization,
        root: str = "./data",
        batch_size: int = 128,
        eval_batch_size: int = 1000,
        val_size: int | float = 5000,
        train_size: int | None = None,
        test_size: int | None = None,
        split_seed: int = 0,
        download: bool = True,
        seed: int = 0,
        steps_per_call: int = 1,
        path: str | None = None,
        size: int | list[int] | None = None,
        channels: int | None = None,
        key: str | None = None,
        test_fraction: float | None = None,
    ) -> None:
        super().__init__()
        if name not in DATASETS:
            raise ConfigError(
                f"data.name={name!r} is unknown; choose one of {', '.join(DATASETS)}."
            )
        given = {"path": path, "size": size, "channels": channels, "key": key,
                 "test_fraction": test_fraction}
        if name not in OWN:
            for option, value in given.items():
                if value is not None:
                    raise ConfigError(
                        f"data.{option}={value} applies to data=folder and data=tensor_file "
                        f"only; remove it for data={name}."
                    )
        elif key is not None and name == "folder":
            raise ConfigError(f"data.key={key} applies to data=tensor_file only; remove it.")
        check_val_size(val_size)
        check_fraction("test_fraction", test_fraction)
        self.path, self.key = path, key
        self.size, self.channels = data_size(size), data_channels(channels)
        self.test_fraction = 0.1 if test_fraction is None else test_fraction
        self.name, self.normalization, self.root = name, normalization, root
        self.batch_size, self.eval_batch_size = batch_size, eval_batch_size
        self.val_size, self.train_size, self.test_size = val_size, train_size, test_size
        self.split_seed, self.download, self.seed = split_seed, download, seed
        self.steps_per_call = steps_per_call
        self.splits: dict[str, torch.Tensor] = {}
        self._image_shape: tuple[int, int, int] | None = None

    def _own_images(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(train pool, test set) of the user's images, (N, C, H, W) floats in [0, 1]: a
        `test_fraction` drawn with `split_seed` is the test set; both keep the file order."""
        if self.name == "folder":
            images = load_image_folder(self.path, self.size, self.channels)
        else:
            images = load_tensor_file(self.path, self.key, self.size, self.channels)
        if images.dtype == torch.uint8:
            images = images.float().div_(255)
        n = len(images)
        n_test = count(self.test_fraction, n)
        if n_test >= n:
            raise ConfigError(
                f"data.path={self.path} holds {n} image(s): data.test_fraction="
                f"{self.test_fraction} leaves none to train on; add images (3 at the least: "
                f"one each for training, validation and test)."
            )
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(self.split_seed))
        test, pool = perm[:n_test].sort().values, perm[n_test:].sort().values
        return images[pool], images[test]

    def load(self) -> ImageData:
        """Read, split and normalise the images (CPU). Raises DataError before any training."""
        if self.splits:
            return self
        if self.name == "synthetic":
            n_train = self.train_size or 2048
            n_val = count(self.val_size, n_train)
            full = synthetic_images(n_train + n_val, seed=self.split_seed).unsqueeze(1)
            test = synthetic_images(self.test_size or 512, seed=self.split_seed + 1).unsqueeze(1)
        elif self.name in OWN:
            full, test = self._own_images()
        else:
            images = load_torchvision_images(self.name, self.root, self.download)
            full, test = images["train"], images["test"]
            full = full.float().div_(255).unsqueeze(1)
            test = test.float().div_(255).unsqueeze(1)
        n_val = count(self.val_size, len(full))
        if n_val >= len(full):
            raise ConfigError(
                f"data.val_size={self.val_size} leaves no training images ({len(full)} in "
                f"all); lower data.val_size (a fraction such as 0.1 works too) or add images."
            )
        perm = torch.randperm(len(full), generator=torch.Generator().manual_seed(self.split_seed))
        val, train = full[perm[:n_val]], full[perm[n_val:]]
        if self.train_size:
            train = train[: self.train_size]
        if self.test_size:
            test = test[: self.test_size]
        if self.batch_size > len(train):
            raise ConfigError(
                f"data.batch_size={self.batch_size} is larger than the training set "
                f"({len(train)} image{'s' if len(train) != 1 else ''}); lower data.batch_size."
            )
        norm = self.normalization.fit(train)  # (N, C, H, W)
        fixed = torch.Generator().manual_seed(self.split_seed)
        self.splits = {
            "train": norm.encode(train.flatten(1)).contiguous(),
            "val": norm.sample(norm.encode(val.flatten(1)), fixed).contiguous(),
            "test": norm.sample(norm.encode(test.flatten(1)), fixed).contiguous(),
        }
        self._image_shape = tuple(train.shape[1:])
        return self

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of every image: (1, 28, 28) for MNIST; C is 1 (grey) or 3 (colour)."""
        self.load()
        return self._image_shape

    @property
    def input_dim(self) -> int:
        """C * H * W: the length of a flat image, as the splits hold them."""
        return self.load().splits["train"].shape[1]

    def setup(self, stage: str | None = None) -> None:
        self.load()
        device = self.trainer.strategy.root_device if self.trainer is not None else None
        if device is not None:
            self.splits = {k: v.to(device) for k, v in self.splits.items()}

    def _epoch(self) -> int:
        return self.trainer.current_epoch if self.trainer is not None else 0

    def train_dataloader(self) -> StepChunks:
        batches = TensorBatches(
            self.splits["train"],
            self.batch_size,
            shuffle=True,
            sample=self.normalization.sample if self.stochastic else None,
            seed=self.seed,
            epoch=self._epoch,
        )
        return StepChunks(batches, self.steps_per_call)

    @property
    def stochastic(self) -> bool:
        """Whether the normalisation transforms each training batch afresh (`sample`)."""
        return type(self.normalization).sample is not Normalization.sample

    def val_dataloader(self) -> TensorBatches:
        return TensorBatches(self.splits["val"], self.eval_batch_size)

    def test_dataloader(self) -> TensorBatches:
        return TensorBatches(self.splits["test"], self.eval_batch_size)

    def probe(self, n: int) -> torch.Tensor:
        """The first `n` validation images: the same for every run of a dataset."""
        return self.load().splits["val"][:n]
