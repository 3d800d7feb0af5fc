"""Your own images: `data=folder` (PNG/JPEG files) and `data=tensor_file` (.npy/.npz/.pt),
colour end to end (per-channel standardisation, RGB reconstructions in TensorBoard), and
every refusal of bad data, before training, naming the option to change."""

import io
from pathlib import Path

import numpy as np
import PIL.Image
import pytest
import torch
from test_bad_input import refused, written

from aelab.data import ImageData
from aelab.data.image_files import load_image_folder, load_tensor_file
from aelab.data.normalization import Standard, Unit
from aelab.diagnostics.images import add_png_image
from aelab.errors import ConfigError, DataError
from aelab.training.run import run

from conftest import compose_config, run_cli
from events import load_events


def pixels(n: int, shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, *shape), dtype=np.uint8)


def save_png(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    PIL.Image.fromarray(array).save(path)


def rgb_folder(root: Path, n: int = 20, side: int = 16, seed: int = 0) -> np.ndarray:
    """`n` RGB PNGs in two class sub-folders (a/, b/), their HxWx3 pixels in sorted order."""
    images = pixels(n, (side, side, 3), seed)
    for i, image in enumerate(images):
        save_png(root / ("a" if i < n // 2 else "b") / f"{i:03d}.png", image)
    return images


def as_chw(images: np.ndarray) -> torch.Tensor:
    """(N, H, W, 3) or (N, H, W) uint8 -> (N, C, H, W) floats value/255."""
    t = torch.from_numpy(images).float() / 255
    return t.permute(0, 3, 1, 2) if t.dim() == 4 else t.unsqueeze(1)


# --- data=folder ---------------------------------------------------------------------------


def test_folder_reads_rgb_png_in_class_sub_folders_in_sorted_order(tmp_path):
    images = rgb_folder(tmp_path / "imgs", n=6, side=5)
    (tmp_path / "imgs" / "notes.txt").write_text("not an image")
    (tmp_path / "imgs" / ".hidden").mkdir()
    save_png(tmp_path / "imgs" / ".hidden" / "x.png", images[0])  # skipped: hidden
    loaded = load_image_folder(tmp_path / "imgs")
    assert loaded.dtype == torch.uint8 and tuple(loaded.shape) == (6, 3, 5, 5)
    assert torch.equal(loaded, torch.from_numpy(images).permute(0, 3, 1, 2))


def test_folder_reads_grey_png_and_jpeg(tmp_path):
    grey = pixels(3, (7, 9), seed=1)
    for i, image in enumerate(grey):
        save_png(tmp_path / "g" / f"{i}.png", image)
    loaded = load_image_folder(tmp_path / "g")
    assert tuple(loaded.shape) == (3, 1, 7, 9) and torch.equal(loaded[:, 0], torch.from_numpy(grey))
    smooth = np.tile(np.linspace(0, 255, 16, dtype=np.uint8), (16, 1))
    rgb = np.stack([smooth, smooth.T, 255 - smooth], axis=-1)
    (tmp_path / "jpg").mkdir()
    PIL.Image.fromarray(rgb).save(tmp_path / "jpg" / "j.JPEG", format="JPEG", quality=95)
    jpeg = load_image_folder(tmp_path / "jpg")
    assert tuple(jpeg.shape) == (1, 3, 16, 16)
    error = (jpeg[0].float() - torch.from_numpy(rgb).permute(2, 0, 1).float()).abs().mean()
    assert float(error) < 3  # lossy, but the same picture


def test_folder_resizes_to_data_size_and_converts_channels(tmp_path):
    save_png(tmp_path / "m" / "big.png", pixels(1, (32, 24, 3))[0])
    save_png(tmp_path / "m" / "small.png", pixels(1, (8, 8))[0])
    assert tuple(load_image_folder(tmp_path / "m", (16, 12), 3).shape) == (2, 3, 16, 12)
    grey = load_image_folder(tmp_path / "m", (8, 8), 1)
    assert tuple(grey.shape) == (2, 1, 8, 8)
    assert torch.equal(grey[1, 0], torch.from_numpy(pixels(1, (8, 8))[0]))  # 8x8 kept as is
    flat = np.full((4, 4), 200, np.uint8)
    save_png(tmp_path / "c" / "flat.png", flat)
    colour = load_image_folder(tmp_path / "c", channels=3)  # grey to colour: copied
    assert tuple(colour.shape) == (1, 3, 4, 4) and colour.unique().tolist() == [200]


def test_folder_splits_hold_every_image_once_as_value_over_255(tmp_path):
    images = rgb_folder(tmp_path / "imgs", n=40)
    data = ImageData("folder", Unit(), path=str(tmp_path / "imgs"), val_size=0.1,
                     test_fraction=0.1, batch_size=8).load()
    assert data.image_shape == (3, 16, 16) and data.input_dim == 768
    shapes = {k: tuple(v.shape) for k, v in data.splits.items()}
    assert shapes == {"train": (32, 768), "val": (4, 768), "test": (4, 768)}
    expected = as_chw(images).flatten(1)
    rows = torch.cat(list(data.splits.values()))
    order = [int((expected == row).all(1).nonzero()) for row in rows]
    assert sorted(order) == list(range(40))  # each image once, exactly value/255
    again = ImageData("folder", Unit(), path=str(tmp_path / "imgs"), val_size=0.1,
                      batch_size=8).load()
    assert torch.equal(again.splits["test"], data.splits["test"])  # seeded: the same test set
    other = ImageData("folder", Unit(), path=str(tmp_path / "imgs"), val_size=0.1,
                      batch_size=8, split_seed=1).load()
    assert not torch.equal(other.splits["test"], data.splits["test"])


def test_val_size_takes_a_fraction_or_a_number(tmp_path):
    rgb_folder(tmp_path / "imgs", n=40)
    by_number = ImageData("folder", Unit(), path=str(tmp_path / "imgs"), val_size=5,
                          test_fraction=0.25, batch_size=8).load()
    assert [len(by_number.splits[k]) for k in ("train", "val", "test")] == [25, 5, 10]
    by_fraction = ImageData("folder", Unit(), path=str(tmp_path / "imgs"), val_size=0.5,
                            test_fraction=0.25, batch_size=8).load()
    assert [len(by_fraction.splits[k]) for k in ("train", "val", "test")] == [15, 15, 10]


def test_mnist_image_shape_is_one_by_28_by_28():
    data = ImageData("synthetic", Unit(), val_size=8, train_size=16, test_size=8,
                     batch_size=8).load()
    assert data.image_shape == (1, 28, 28) and data.input_dim == 784


# --- data=tensor_file ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("layout", "shape"),
    [("NHW", (6, 5, 4)), ("NCHW", (6, 3, 5, 4)), ("NCHW", (6, 1, 5, 4)), ("NHWC", (6, 5, 4, 3))],
)
@pytest.mark.parametrize("suffix", [".npy", ".npz", ".pt"])
def test_tensor_files_in_every_layout_round_trip(tmp_path, layout, shape, suffix):
    array = pixels(shape[0], shape[1:], seed=2)
    path = tmp_path / f"images{suffix}"
    if suffix == ".npy":
        np.save(path, array)
    elif suffix == ".npz":
        np.savez(path, images=array)
    else:
        torch.save(torch.from_numpy(array), path)
    chw = torch.from_numpy(array)
    chw = chw.unsqueeze(1) if layout == "NHW" else chw.permute(0, 3, 1, 2) if layout == "NHWC" \
        else chw
    loaded = load_tensor_file(path)
    assert loaded.dtype == torch.uint8 and torch.equal(loaded, chw)
    data = ImageData("tensor_file", Unit(), path=str(path), val_size=1, test_fraction=0.2,
                     batch_size=2).load()
    assert data.image_shape == tuple(chw.shape[1:])
    assert [len(data.splits[k]) for k in ("train", "val", "test")] == [4, 1, 1]
    rows = torch.cat(list(data.splits.values()))
    expected = chw.float().div(255).flatten(1)
    assert sorted(int((expected == r).all(1).nonzero()) for r in rows) == list(range(6))


def test_float_images_keep_their_values_and_keys_choose_an_array(tmp_path):
    images = torch.rand(5, 3, 4, 4)
    torch.save({"x": images, "labels": torch.arange(5)}, tmp_path / "d.pt")
    assert torch.equal(load_tensor_file(tmp_path / "d.pt", key="x"), images)
    np.savez(tmp_path / "d.npz", labels=np.arange(5), x=images.numpy().astype(np.float64))
    loaded = load_tensor_file(tmp_path / "d.npz", key="x")
    assert loaded.dtype == torch.float32 and torch.equal(loaded, images)
    np.save(tmp_path / "i.npy", np.arange(32, dtype=np.int64).reshape(2, 4, 4) * 8)
    assert load_tensor_file(tmp_path / "i.npy").dtype == torch.uint8  # ints within 0-255
    grey = load_tensor_file(tmp_path / "d.pt", key="x", size=(2, 2), channels=1)
    assert tuple(grey.shape) == (5, 1, 2, 2) and 0 <= float(grey.min()) <= float(grey.max()) <= 1


# --- colour normalisation and images ---------------------------------------------------------


def test_standard_is_per_channel_on_colour_and_one_scalar_on_grey(tmp_path):
    x = torch.rand(300, 3, 6, 5) * torch.tensor([0.2, 0.5, 1.0]).view(1, 3, 1, 1)
    x[:, 1] += 0.3
    norm = Standard().fit(x)
    assert tuple(norm.mean.shape) == (90,)  # a (C*H*W,) vector for the flat layout
    z = norm.encode(x.flatten(1)).view(300, 3, 30)
    torch.testing.assert_close(z.mean((0, 2)), torch.zeros(3), atol=1e-5, rtol=0)
    torch.testing.assert_close(z.std((0, 2)), torch.ones(3), atol=1e-5, rtol=0)
    torch.testing.assert_close(norm.decode(norm.encode(x.flatten(1))), x.flatten(1))
    on_meta = norm.decode(torch.zeros(2, 90, device="meta"))  # the vectors follow the device
    assert on_meta.device.type == "meta" and norm.mean.device.type == "meta"
    grey = torch.rand(50, 1, 4, 4)
    g = Standard().fit(grey)
    assert g.mean == float(grey.mean()) and g.std == float(grey.std())  # today's computation
    np.save(tmp_path / "c.npy", (x.clamp(0, 1) * 255).round().to(torch.uint8).numpy())
    data = ImageData("tensor_file", Standard(), path=str(tmp_path / "c.npy"),
                     val_size=0.1, batch_size=8).load()
    train = data.splits["train"].view(-1, 3, 30)
    torch.testing.assert_close(train.mean((0, 2)), torch.zeros(3), atol=1e-5, rtol=0)
    torch.testing.assert_close(train.std((0, 2)), torch.ones(3), atol=1e-5, rtol=0)


def png_channels(encoded: bytes) -> int:
    return len(PIL.Image.open(io.BytesIO(encoded)).getbands())


def test_add_png_image_writes_rgb_for_three_channels(tmp_path):
    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(str(tmp_path))
    add_png_image(writer, "rgb", torch.rand(3, 5, 7), 1)
    add_png_image(writer, "grey", torch.rand(1, 5, 7), 1)
    writer.close()
    acc = load_events(tmp_path)
    rgb, grey = acc.Images("rgb")[0], acc.Images("grey")[0]
    assert (rgb.height, rgb.width) == (5, 7)
    assert png_channels(rgb.encoded_image_string) == 3
    assert png_channels(grey.encoded_image_string) == 1


# --- refusals --------------------------------------------------------------------------------


def test_data_folder_without_data_path_is_refused_through_the_cli(tmp_path):
    message = refused(tmp_path, "data=folder")
    assert "data=folder needs data.path=PATH, a folder of PNG/JPEG images" in message


def test_an_empty_folder_is_refused_through_the_cli_naming_the_extensions(tmp_path):
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    (tmp_path / "empty" / "sub" / "readme.txt").write_text("no images")
    (tmp_path / "cwd").mkdir()
    message = refused(tmp_path / "cwd", "data=folder", f"data.path={tmp_path / 'empty'}")
    assert "no images found in" in message and "*.png, *.jpg, *.jpeg" in message


def folder_with(tmp_path: Path, *files: tuple[str, np.ndarray | bytes]) -> str:
    for name, content in files:
        path = tmp_path / "bad" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            save_png(path, content)
    return str(tmp_path / "bad")


def array_file(tmp_path: Path, name: str, array) -> str:
    path = tmp_path / name
    if name.endswith(".npy"):
        np.save(path, array)
    elif name.endswith(".npz"):
        np.savez(path, **array)
    else:
        torch.save(array, path)
    return str(path)


RGB, GREY = pixels(1, (8, 8, 3))[0], pixels(1, (8, 8))[0]

BAD_DATA = {
    "not found": (lambda t: ("folder", {"path": str(t / "nowhere")}),
                  DataError, r"data.path=.*nowhere not found \(looked for "),
    "folder is a file": (lambda t: ("folder", {"path": array_file(t, "x.npy", GREY)}),
                         DataError, "is not a folder; .*use data=tensor_file"),
    "corrupt image": (lambda t: ("folder", {"path": folder_with(
        t, ("a.png", RGB), ("b.png", b"\x89PNG\r\n\x1a\n garbage"))}),
        DataError, r"bad/b\.png cannot be read as an image .*Remove or replace it"),
    "mixed sizes": (lambda t: ("folder", {"path": folder_with(
        t, ("a.png", RGB), ("b.png", pixels(1, (8, 6, 3))[0]))}),
        DataError, r"different sizes: .*a\.png is 8x8 \(HxW\), .*b\.png is 8x6; set "
                   r"data.size=\[H,W\] \(e.g. data.size=\[8,8\]\)"),
    "mixed channels": (lambda t: ("folder", {"path": folder_with(
        t, ("a.png", RGB), ("b.png", GREY))}),
        DataError, r"mixes grey and colour images: .*b\.png is grey \(1 channel\), .*a\.png is "
                   r"colour \(3 channels\); set data.channels=1 .* or data.channels=3"),
    "float above 1": (lambda t: ("tensor_file", {"path": array_file(
        t, "f.npy", np.full((4, 8, 8), 2.5, np.float32))}),
        DataError, r"float images must be in \[0, 1\], but its values run from 2.5 to 2.5; "
                   r"divide by 255"),
    "float nan": (lambda t: ("tensor_file", {"path": array_file(
        t, "n.npy", np.full((4, 8, 8), np.nan, np.float32))}),
        DataError, "holds NaN or infinite values"),
    "int outside 0-255": (lambda t: ("tensor_file", {"path": array_file(
        t, "i.npy", np.arange(-1, 255, dtype=np.int16).reshape(4, 8, 8))}),
        DataError, "integer images must be in 0-255, but its values run from -1 to 254"),
    "wrong dtype": (lambda t: ("tensor_file", {"path": array_file(
        t, "s.npy", np.full((4, 8, 8), "x"))}),
        DataError, r"has dtype <U1; images must be uint8 \(0-255\) or float in \[0, 1\]"),
    "two dims": (lambda t: ("tensor_file", {"path": array_file(t, "v.npy", GREY)}),
                 DataError, r"has 2 dimensions \(shape \[8, 8\]\); expected N x H x W"),
    "no channel axis": (lambda t: ("tensor_file", {"path": array_file(
        t, "c.npy", np.zeros((4, 5, 8, 8), np.uint8))}),
        DataError, r"shape \[4, 5, 8, 8\]: neither its second nor its last dimension is 1 or 3"),
    "npz without key": (lambda t: ("tensor_file", {"path": array_file(
        t, "k.npz", {"x": GREY[None], "y": GREY[None]})}),
        DataError, r"holds 2 arrays \(x, y\); set data.key to the one with the images, "
                   r"e.g. data.key=x"),
    "npz wrong key": (lambda t: ("tensor_file", {"key": "z", "path": array_file(
        t, "k.npz", {"x": GREY[None], "y": GREY[None]})}),
        DataError, "data.key=z is not in .*k.npz; it holds: x, y"),
    "corrupt pt": (lambda t: ("tensor_file", {"path": folder_with(t, ("x.pt", b"not a pt"))
                                               + "/x.pt"}),
                   DataError, r"x\.pt cannot be read as a \.pt file"),
    "wrong suffix": (lambda t: ("tensor_file", {"path": folder_with(t, ("x.csv", b"1,2"))
                                                 + "/x.csv"}),
                     DataError, r"is not a \.npy, \.npz or \.pt file"),
    "too few for val_size": (lambda t: ("folder", {"path": folder_with(
        t, *((f"{i}.png", RGB) for i in range(6))), "val_size": 5}),
        ConfigError, r"data.val_size=5 leaves no training images \(5 in all\); lower "
                     r"data.val_size"),
    "too few for a test set": (lambda t: ("folder", {"path": folder_with(t, ("a.png", RGB))}),
                               ConfigError, "holds 1 image.*leaves none to train on"),
    "constant channel": (lambda t: ("folder", {"norm": Standard(), "path": folder_with(
        t, *((f"{i}.png", np.dstack([GREY, GREY, np.zeros_like(GREY)])) for i in range(9)))}),
        DataError, "channel 2 of the training images is constant .*use normalization=unit"),
    "key on a folder": (lambda t: ("folder", {"path": str(t), "key": "x"}),
                        ConfigError, "data.key=x applies to data=tensor_file only"),
    "path on mnist": (lambda t: ("mnist", {"path": str(t)}),
                      ConfigError, "data.path=.* applies to data=folder and data=tensor_file"),
    "bad size": (lambda t: ("folder", {"path": str(t), "size": [0, 4]}),
                 ConfigError, r"data.size=\[0, 4\] must be \[H,W\] of positive integers"),
    "bad channels": (lambda t: ("folder", {"path": str(t), "channels": 2}),
                     ConfigError, r"data.channels=2 must be 1 \(grey\), 3 \(colour\)"),
    "bad test_fraction": (lambda t: ("folder", {"path": str(t), "test_fraction": 1.0}),
                          ConfigError, r"data.test_fraction=1.0 must be a fraction in \(0, 1\)"),
}


@pytest.mark.parametrize("case", list(BAD_DATA))
def test_bad_data_is_refused_naming_the_option(tmp_path, case):
    make, error, match = BAD_DATA[case]
    name, options = make(tmp_path)
    norm = options.pop("norm", Unit())
    with pytest.raises(error, match=match):
        ImageData(name, norm, batch_size=1, val_size=options.pop("val_size", 1),
                  **options).load()


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("data.val_size=1.5", "data.val_size=1.5 must be a positive integer, or a fraction in "
                              "(0, 1) of the training images"),
        ("data.size=[32]", "data.size=[32] must be [H,W] of positive integers or one integer"),
        ("data.channels=4", "data.channels=4 must be 1 (grey), 3 (colour) or null"),
    ],
)
def test_bad_data_options_are_refused_before_reading(tmp_path, override, message):
    cfg = compose_config(["data=folder", f"data.path={tmp_path}", override], tmp_path / "run")
    with pytest.raises(ConfigError) as err:
        run(cfg)
    assert message in str(err.value)
    assert written(tmp_path / "run") == set()


# --- one real run on a colour folder --------------------------------------------------------


def test_a_colour_folder_trains_and_logs_rgb_reconstructions(tmp_path):
    rgb_folder(tmp_path / "imgs", n=48, side=8)
    proc = run_cli("data=folder", f"data.path={tmp_path / 'imgs'}", "data.batch_size=16",
                   "normalization=standard", "trainer.max_epochs=1",
                   "trainer.enable_progress_bar=false", "threads=1", "hydra.run.dir=run",
                   cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    images = load_events(tmp_path / "run").Images("reconstructions")
    assert [e.step for e in images] == [1]
    grid = PIL.Image.open(io.BytesIO(images[0].encoded_image_string))
    assert grid.mode == "RGB" and len(grid.getbands()) == 3
    n_val = 4  # val_size=0.1 of the 43 left after test_fraction=0.1 (5)
    assert grid.size == (n_val * 10, 2 * 10)  # inputs above reconstructions, 8x8 + padding
