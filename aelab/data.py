"""In-memory data: one float tensor per split on the training device, batches are slices."""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterator

import lightning as L
import torch

from aelab.datasets import TORCHVISION_NAMES, load_torchvision_images, synthetic_images
from aelab.errors import ConfigError
from aelab.normalization import Normalization

DATASETS = (*TORCHVISION_NAMES, "synthetic")


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
    """Train/val/test images, normalised once, held as (N, 784) float tensors.

    Train and val come from the official train set, split with `split_seed`;
    test is the official test set. `train_size`/`test_size` take a prefix
    (and set the sizes of the `synthetic` set).
    """

    def __init__(
        self,
        name: str,
        normalization: Normalization,
        root: str = "./data",
        batch_size: int = 128,
        eval_batch_size: int = 1000,
        val_size: int = 5000,
        train_size: int | None = None,
        test_size: int | None = None,
        split_seed: int = 0,
        download: bool = True,
        seed: int = 0,
        steps_per_call: int = 1,
    ) -> None:
        super().__init__()
        if name not in DATASETS:
            raise ConfigError(
                f"data.name={name!r} is unknown; choose one of {', '.join(DATASETS)}."
            )
        self.name, self.normalization, self.root = name, normalization, root
        self.batch_size, self.eval_batch_size = batch_size, eval_batch_size
        self.val_size, self.train_size, self.test_size = val_size, train_size, test_size
        self.split_seed, self.download, self.seed = split_seed, download, seed
        self.steps_per_call = steps_per_call
        self.splits: dict[str, torch.Tensor] = {}

    def load(self) -> ImageData:
        """Read, split and normalise the images (CPU). Raises DataError before any training."""
        if self.splits:
            return self
        if self.name == "synthetic":
            n_train = self.train_size or 2048
            full = synthetic_images(n_train + self.val_size, seed=self.split_seed)
            test = synthetic_images(self.test_size or 512, seed=self.split_seed + 1)
        else:
            images = load_torchvision_images(self.name, self.root, self.download)
            full, test = images["train"], images["test"]
            full = full.float().div_(255)
            test = test.float().div_(255)
        if self.val_size >= len(full):
            raise ConfigError(
                f"data.val_size={self.val_size} leaves no training images ({len(full)} in all)."
            )
        perm = torch.randperm(len(full), generator=torch.Generator().manual_seed(self.split_seed))
        val, train = full[perm[: self.val_size]], full[perm[self.val_size :]]
        if self.train_size:
            train = train[: self.train_size]
        if self.test_size:
            test = test[: self.test_size]
        if self.batch_size > len(train):
            raise ConfigError(
                f"data.batch_size={self.batch_size} is larger than the training set "
                f"({len(train)} images); lower data.batch_size."
            )
        norm = self.normalization.fit(train)
        fixed = torch.Generator().manual_seed(self.split_seed)
        self.splits = {
            "train": norm.encode(train.flatten(1)).contiguous(),
            "val": norm.sample(norm.encode(val.flatten(1)), fixed).contiguous(),
            "test": norm.sample(norm.encode(test.flatten(1)), fixed).contiguous(),
        }
        return self

    @property
    def input_dim(self) -> int:
        return self.load().splits["train"].shape[1]

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(channels, height, width) of the images (square grey for the IDX and synthetic sets)."""
        side = math.isqrt(self.input_dim)
        return (1, side, side)

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
            sample=self.normalization.sample if self._stochastic else None,
            seed=self.seed,
            epoch=self._epoch,
        )
        return StepChunks(batches, self.steps_per_call)

    @property
    def _stochastic(self) -> bool:
        return type(self.normalization).sample is not Normalization.sample

    def val_dataloader(self) -> TensorBatches:
        return TensorBatches(self.splits["val"], self.eval_batch_size)

    def test_dataloader(self) -> TensorBatches:
        return TensorBatches(self.splits["test"], self.eval_batch_size)

    def probe(self, n: int) -> torch.Tensor:
        """The first `n` validation images: the same for every run of a dataset."""
        return self.load().splits["val"][:n]
