"""Data: IDX reading, splits, normalisations, batches as slices."""

import struct

import pytest
import torch

from aelab.data import ImageData, TensorBatches
from aelab.data.normalization import (
    Binary,
    Clamped,
    Dequantized,
    Standard,
    StochasticBinary,
    Symmetric,
    Unit,
)
from aelab.data.sources import load_torchvision_images, synthetic_images
from aelab.errors import ConfigError, DataError


def write_idx(path, images: torch.Tensor, truncate: int = 0) -> None:
    """An IDX file: images (N, R, C) with magic 2051, or labels (N,) with magic 2049."""
    shape = tuple(images.shape)
    magic = 2051 if len(shape) == 3 else 2049
    raw = struct.pack(f">I{len(shape)}I", magic, *shape) + images.to(torch.uint8).numpy().tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(raw[: len(raw) - truncate])


def fake_mnist(root, train: torch.Tensor, test: torch.Tensor, truncate: int = 0) -> None:
    raw = root / "MNIST" / "raw"
    for prefix, images in (("train", train), ("t10k", test)):
        write_idx(raw / f"{prefix}-images-idx3-ubyte", images,
                  truncate if prefix == "train" else 0)
        write_idx(raw / f"{prefix}-labels-idx1-ubyte", torch.zeros(len(images)))


def test_torchvision_reads_the_idx_files_and_a_truncated_one_is_named(tmp_path):
    train = torch.randint(0, 256, (5, 28, 28), dtype=torch.uint8)
    test = torch.randint(0, 256, (3, 28, 28), dtype=torch.uint8)
    fake_mnist(tmp_path / "ok", train, test)
    images = load_torchvision_images("mnist", tmp_path / "ok", download=False)
    assert torch.equal(images["train"], train) and torch.equal(images["test"], test)
    fake_mnist(tmp_path / "short", train, test, truncate=100)
    with pytest.raises(DataError, match="train-images-idx3-ubyte and train-labels-idx1-ubyte "
                       "cannot be read .*truncated or corrupt. Delete them and download"):
        load_torchvision_images("mnist", tmp_path / "short", download=False)


def test_batches_cover_every_sample_once_and_reshuffle_per_epoch():
    data = torch.arange(10.0).unsqueeze(1)
    epoch = [0]
    batches = TensorBatches(data, 4, shuffle=True, seed=3, epoch=lambda: epoch[0])
    assert len(batches) == 3
    first = torch.cat(list(batches)).squeeze(1)
    assert sorted(first.tolist()) == list(range(10))
    assert torch.equal(torch.cat(list(batches)).squeeze(1), first)  # same epoch, same order
    epoch[0] = 1
    assert not torch.equal(torch.cat(list(batches)).squeeze(1), first)
    ordered = torch.cat(list(TensorBatches(data, 4))).squeeze(1)
    assert ordered.tolist() == list(range(10))


@pytest.mark.parametrize("norm", [Unit(), Symmetric(), Standard()])
def test_decode_inverts_encode(norm):
    x = torch.rand(50, 784)
    norm.fit(x)
    torch.testing.assert_close(norm.decode(norm.encode(x)), x)


def test_standard_has_zero_mean_unit_std_on_train():
    x = torch.rand(200, 784) * 0.5
    z = Standard().fit(x).encode(x)
    assert abs(float(z.mean())) < 1e-5 and abs(float(z.std()) - 1) < 1e-4


def test_binary_thresholds_and_stochastic_binary_samples_the_intensities():
    x = torch.tensor([[0.2, 0.5, 0.51, 1.0]])
    assert Binary().encode(x).tolist() == [[0.0, 0.0, 1.0, 1.0]]
    p = torch.full((2000, 784), 0.3)
    sample = StochasticBinary().sample(p, torch.Generator().manual_seed(0))
    assert set(sample.unique().tolist()) == {0.0, 1.0}
    assert abs(float(sample.mean()) - 0.3) < 0.01


def test_clamped_keeps_every_pixel_off_0_and_1():
    x = torch.tensor([[0.0, 0.005, 0.5, 0.995, 1.0]])
    assert Clamped(eps=0.01).encode(x)[0].tolist() == pytest.approx([0.01, 0.01, 0.5, 0.99, 0.99])
    assert torch.equal(Clamped().decode(x), x)  # reconstructions are already pixels
    for eps in (0.0, 0.5, -0.1):
        with pytest.raises(ConfigError, match="normalization.eps"):
            Clamped(eps=eps)


def test_dequantized_spreads_each_8_bit_level_over_its_own_bin():
    levels = torch.arange(256.0).repeat(400, 1)  # (400, 256): every level, 400 times
    x = levels / 255
    y = Dequantized().sample(x, torch.Generator().manual_seed(0))
    assert float(y.min()) > 0 and float(y.max()) < 1
    assert torch.equal(torch.floor(y * 256), levels)  # level k lands in [k/256, (k+1)/256)
    assert torch.allclose(y.mean(0), (levels[0] + 0.5) / 256, atol=0.1 / 256)
    assert not torch.equal(y, Dequantized().sample(x, torch.Generator().manual_seed(1)))
    fixed = ImageData("synthetic", Dequantized(), val_size=64, train_size=128).load()
    again = ImageData("synthetic", Dequantized(), val_size=64, train_size=128).load()
    assert torch.equal(fixed.splits["val"], again.splits["val"])  # sampled once, fixed


def test_synthetic_images_are_structured_and_in_unit_range():
    images = synthetic_images(64, seed=0)
    assert images.shape == (64, 28, 28)
    assert float(images.min()) >= 0 and float(images.max()) <= 1
    assert torch.equal(images, synthetic_images(64, seed=0))
    assert float(images.std()) > 0.1


def test_mnist_splits_and_pixel_mean(mnist_root):
    data = ImageData("mnist", Unit(), root=str(mnist_root)).load()
    shapes = {k: tuple(v.shape) for k, v in data.splits.items()}
    assert shapes == {"train": (55000, 784), "val": (5000, 784), "test": (10000, 784)}
    full_mean = (data.splits["train"].sum() + data.splits["val"].sum()) / (60000 * 784)
    assert abs(float(full_mean) - 0.1307) < 1e-4
    again = ImageData("mnist", Unit(), root=str(mnist_root)).load()
    assert torch.equal(again.probe(100), data.probe(100))  # fixed split: same probe set


def test_stochastic_binary_val_set_is_fixed(mnist_root):
    a = ImageData("synthetic", StochasticBinary(), val_size=64, train_size=128).load()
    b = ImageData("synthetic", StochasticBinary(), val_size=64, train_size=128).load()
    assert torch.equal(a.splits["val"], b.splits["val"])
    assert set(a.splits["val"].unique().tolist()) == {0.0, 1.0}
