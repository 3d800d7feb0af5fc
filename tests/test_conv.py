"""Encoder and decoder as parts: conv autoencoders, pairing, and every model-level tool on them."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from aelab.diagnostics import metrics as dg
from aelab.diagnostics.callback import channels_last, filter_grid
from aelab.errors import ConfigError
from aelab.models import (
    ConvDecoder,
    ConvEncoder,
    EncoderDecoder,
    MLPDecoder,
    init_kaiming,
    init_normal,
    init_xavier,
    mlp_autoencoder,
    unit_rows,
)
from aelab.training.build import build

from conftest import TINY, run_cli
from events import load_events


def conv_net(shape=(1, 28, 28), channels=(8, 16), kernel=3, downsample="stride", code=16,
             activation=nn.ReLU) -> EncoderDecoder:
    return EncoderDecoder(ConvEncoder(shape, activation, channels, kernel, downsample, code),
                          ConvDecoder(shape, activation, channels, kernel, downsample, code))


@pytest.mark.parametrize("downsample", ["stride", "pool"])
@pytest.mark.parametrize("kernel", [3, 4, 5])
@pytest.mark.parametrize("shape", [(1, 28, 28), (3, 32, 32), (1, 15, 17), (3, 9, 8)])
def test_conv_autoencoder_returns_every_pixel_of_any_image_shape(shape, kernel, downsample):
    net = conv_net(shape, kernel=kernel, downsample=downsample)
    x = torch.rand(4, math.prod(shape))
    assert net(x).shape == x.shape
    assert net.encode(x).shape == (4, 16)
    assert net.decode(net.encode(x)).shape == x.shape
    pre, post = net.trace(x)
    assert len(pre) == len(net.weight_layers()) == len(net.activations())
    assert pre[0].shape[:2] == (4, 8) and pre[0].shape[2] in (shape[1] // 2, (shape[1] + 1) // 2)
    assert post[net.code_layer].shape == (4, 16)


def test_mlp_parts_are_the_seed_network():
    net = mlp_autoencoder((1, 28, 28), [100, 50], nn.Sigmoid)
    widths = [(m.in_features, m.out_features) for m in net.weight_layers()]
    assert widths == [(784, 100), (100, 50), (50, 100), (100, 784)]
    assert net.code_layer == 1 and net.encoder.code_dim == net.decoder.code_dim == 50


def test_an_encoder_pairs_with_any_decoder_of_its_code_size():
    net = EncoderDecoder(ConvEncoder((1, 28, 28), nn.ReLU, [8, 16], code_dim=20),
                         MLPDecoder((1, 28, 28), nn.ReLU, [100, 20]))
    assert net(torch.rand(2, 784)).shape == (2, 784)
    with pytest.raises(ConfigError, match="outputs a code of 20 but the decoder takes 16"):
        EncoderDecoder(ConvEncoder((1, 28, 28), nn.ReLU, [8, 16], code_dim=20),
                       MLPDecoder((1, 28, 28), nn.ReLU, [100, 16]))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"channels": [8] * 6}, r"halves \(28, 28\) images 6 times, but they are 1x1 after 5"),
     ({"channels": []}, r"model.channels=\[\] must be a non-empty list"),
     ({"downsample": "avg"}, "model.downsample='avg' is unknown; choose stride or pool"),
     ({"code_dim": 0}, "model.code_dim=0 must be a positive integer"),
     ({"kernel": 0}, "model.kernel=0 must be a positive integer")],
)
def test_conv_settings_that_cannot_work_are_refused(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        ConvEncoder((1, 28, 28), nn.ReLU, **kwargs)


# --- model-level tools ask the parts ---------------------------------------------------------


def test_unit_rows_are_output_channels_for_conv_and_transposed_conv():
    conv, deconv = nn.Conv2d(3, 5, 3), nn.ConvTranspose2d(5, 3, 4)
    assert unit_rows(conv.weight, conv).shape == (5, 27)
    assert unit_rows(deconv.weight, deconv).shape == (3, 80)
    torch.testing.assert_close(unit_rows(deconv.weight, deconv)[1], deconv.weight[:, 1].flatten())


def test_collapse_metrics_on_hand_built_conv_kernels():
    conv = nn.Conv2d(1, 4, 3)
    w0 = unit_rows(conv.weight.detach().clone(), conv)
    w = w0 * 0.1  # every kernel scaled by 0.1
    assert float(dg.norm_ratio(w, w0)) == pytest.approx(0.1, rel=1e-6)
    assert float(dg.shrunk_fraction(w, w0, fraction=0.2)) == 1.0
    one = w0.clone()
    one[2] *= 0.05  # one output channel of four shrinks
    assert float(dg.shrunk_fraction(one, w0)) == 0.25
    assert float(dg.relative_change(one, w0)) == pytest.approx(
        0.95 * float(w0[2].norm() / w0.norm()), rel=1e-5)


def test_a_dead_conv_channel_is_counted_dead():
    net = conv_net(channels=(4, 8))
    first = net.weight_layers()[0]
    with torch.no_grad():
        first.bias[1] = -1e3  # channel 1 is negative at every position of every image
    pre, _ = net.trace(torch.rand(16, 784))
    assert channels_last(pre[0]).shape == (16 * 14 * 14, 4)
    assert float(dg.dead_fraction(channels_last(pre[0]))) == 0.25


@pytest.mark.parametrize("init", [init_xavier, init_kaiming, init_normal])
def test_init_groups_reach_conv_and_transposed_conv_layers(init):
    net = conv_net(channels=(16, 32))
    torch.manual_seed(0)
    init(net)
    for layer in net.weight_layers():
        w, fan_in = layer.weight.detach(), unit_rows(layer.weight, layer).shape[1]
        if init is init_kaiming and not isinstance(layer, nn.ConvTranspose2d):
            assert float(w.std()) == pytest.approx(math.sqrt(2 / fan_in), rel=0.1)
        if init is init_normal:
            assert float(w.std()) == pytest.approx(1.0, rel=0.1)
        else:
            assert layer.bias.eq(0).all()


def test_l2_penalty_and_filter_image_cover_conv_kernels(make_config):
    parts = build(make_config(*TINY, "model=conv", "model.channels=[4,8]", "l2_penalty=0.01"))
    layers = parts.net.weight_layers()
    assert [type(m).__name__ for m in layers] == [
        "Conv2d", "Conv2d", "Linear", "Linear", "ConvTranspose2d", "ConvTranspose2d"]
    torch.testing.assert_close(parts.module.l2(), sum(m.weight.square().sum() for m in layers))
    filters = parts.net.first_layer_filters()
    assert filters.shape == (4, 1, 3, 3)
    grid = filter_grid(torch.full((4, 1, 3, 3), 0.25))  # 2 x 2 tiles of 12 px, 1 px padding
    assert grid.shape == (1, 28, 28)
    assert float(grid[0, 1:13, 1:13].mean()) == 0.25 and float(grid[0, 0, 0]) == 1.0
    colour = filter_grid(torch.rand(5, 3, 8, 8))  # an MLP's units on 3x8x8 images: RGB tiles
    assert colour.shape == (3, 2 * 18, 3 * 18)  # 16 px tiles, 3 columns, 2 rows


# --- a real run ------------------------------------------------------------------------------


def test_conv_run_logs_scalars_reconstructions_and_conv_filters(tmp_path):
    out = tmp_path / "run"
    proc = run_cli("model=conv", "data=synthetic", "trainer.max_epochs=1",
                   "trainer.enable_progress_bar=false", f"hydra.run.dir={out}", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    acc = load_events(out)
    scalars = set(acc.Tags()["scalars"])
    assert {"train/loss", "val/mse", "collapse/norm_ratio/W1", "collapse/norm_ratio/W6",
            "units/saturation/h1", "rank/code", "blob/ev"} <= scalars
    assert "units/dead/h1" not in scalars  # sigmoid units saturate; they do not die
    [recon] = acc.Images("reconstructions")[-1:]
    assert (recon.height, recon.width) == (2 * 30, 16 * 30)
    filters = acc.Images("collapse/W1_filters")
    assert [im.step for im in filters] == [0, 1]
    # 32 kernels of 3x3 shown at 12x12 in a 6 x 6 grid of 14 px cells
    assert (filters[0].height, filters[0].width) == (6 * 14, 6 * 14)


def test_conv_on_colour_images_logs_colour_filters_and_reconstructions(tmp_path):
    import io

    import numpy as np
    import PIL.Image

    g = torch.Generator().manual_seed(0)
    images = (torch.rand(64, 3, 16, 16, generator=g) * 255).to(torch.uint8)
    np.savez(tmp_path / "colour.npz", images=images.numpy())
    proc = run_cli("model=conv", "model.channels=[4,8]", "data=tensor_file",
                   f"data.path={tmp_path / 'colour.npz'}", "data.batch_size=16",
                   "trainer.max_epochs=1", "trainer.enable_progress_bar=false", "threads=1",
                   "hydra.run.dir=run", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    acc = load_events(tmp_path / "run")
    filters = PIL.Image.open(io.BytesIO(acc.Images("collapse/W1_filters")[-1].encoded_image_string))
    assert filters.mode == "RGB" and filters.size == (2 * 14, 2 * 14)  # 4 RGB kernels, 12 px
    recon = PIL.Image.open(io.BytesIO(acc.Images("reconstructions")[-1].encoded_image_string))
    assert recon.mode == "RGB"
