"""End to end: a tiny synthetic run logs every diagnostic family to TensorBoard and a verdict."""

import io
import json

import numpy as np
import pytest
import torch
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from aelab.diagnostics import metrics as dg
from aelab.diagnostics.verdict import VERDICTS, verdict
from aelab.training.build import build
from aelab.training.run import run

from conftest import TINY

LAYERS = ("W1", "W2", "W3", "W4")  # the seed network: 784-100-50-100-784
HIDDEN = ("h1", "h2", "h3")


def events(folder) -> EventAccumulator:
    acc = EventAccumulator(
        str(folder), size_guidance={"scalars": 0, "images": 0, "histograms": 0, "tensors": 0}
    )
    acc.Reload()
    return acc


def scalars(acc: EventAccumulator, tag: str) -> dict[int, float]:
    return {e.step: e.value for e in acc.Scalars(tag)}


@pytest.fixture(scope="module")
def sigmoid_run(tmp_path_factory):
    """The seed network (sigmoid, MSE) on the tiny synthetic set, 2 epochs."""
    from conftest import compose_config

    folder = tmp_path_factory.mktemp("diag") / "run"
    result = run(compose_config([*TINY, "trainer.max_epochs=2"], folder))
    return folder, result, events(folder)


def test_every_metric_family_is_logged(sigmoid_run):
    folder, _, acc = sigmoid_run
    tags = set(acc.Tags()["scalars"])
    expected = {f"blob/{k}" for k in ("ev", "r", "d", "mse", "bce_excess")}
    expected |= {f"blob/mean_image/{k}" for k in ("ev", "r", "d", "mse", "bce_excess")}
    for w in LAYERS:
        expected |= {f"collapse/{k}/{w}" for k in ("norm_ratio", "change", "max_abs")}
        expected |= {f"collapse/shrunk_units/{w}", f"grads/norm/{w}", f"grads/update_ratio/{w}"}
    for h in HIDDEN:
        expected |= {f"units/saturation/{h}", f"units/input_dependence/{h}"}
    expected |= {"units/saturation/out", "units/exact_bound/out", "rank/code", "rank/W1"}
    assert expected <= tags, sorted(expected - tags)
    assert not any(t.startswith("units/dead/") for t in tags)  # sigmoid units cannot die
    for tag in expected - {t for t in expected if t.startswith("grads/")}:
        assert sorted(scalars(acc, tag)) == [0, 1, 2], tag  # init, then after each epoch
    assert sorted(scalars(acc, "grads/norm/W1")) == [1, 2]  # no gradient before training


def test_logged_numbers_make_sense(sigmoid_run):
    _, _, acc = sigmoid_run
    at = {tag: scalars(acc, tag) for tag in acc.Tags()["scalars"]}
    for w in LAYERS:
        assert at[f"collapse/norm_ratio/{w}"][0] == pytest.approx(1.0)
        assert at[f"collapse/change/{w}"][0] == 0.0
        assert at[f"collapse/change/{w}"][2] > 0.01  # Adam moved every layer
        assert at[f"grads/norm/{w}"][2] > 0
        assert 1e-5 < at[f"grads/update_ratio/{w}"][1] < 0.5
    for k in ("ev", "r", "d"):
        assert at[f"blob/mean_image/{k}"][2] == pytest.approx(0.0, abs=1e-6)
    assert at["blob/mean_image/mse"][0] == at["blob/mean_image/mse"][2] > 0  # a fixed line
    assert at["blob/ev"][2] > at["blob/ev"][0]  # training improves on the initial output
    assert 0 < at["rank/W1"][0] <= 100 and 1 <= at["rank/code"][2] <= 50
    assert at["units/exact_bound/out"][0] == 0.0
    assert at["units/saturation/h1"][2] == pytest.approx(
        recomputed(sigmoid_run[0], [*TINY, "trainer.max_epochs=2"], dg.saturation_fraction),
        abs=1e-6)


def recomputed(folder, overrides: list[str], metric) -> float:
    """`metric` of the first hidden layer's pre-activations on the probe set (the first
    validation images), from the run's last.ckpt: what the Diagnostics callback logged at the
    end, computed again from the saved weights."""
    from conftest import compose_config

    parts = build(compose_config(overrides, folder.parent / "again"))
    checkpoint = torch.load(folder / "last.ckpt", map_location="cpu", weights_only=True)
    parts.module.load_state_dict(checkpoint["state_dict"])
    with torch.no_grad():
        pre, _ = parts.net.trace(parts.data.probe(1000))
    return metric(pre[0]).item()


def test_weight_histograms_and_filter_grid(sigmoid_run):
    _, _, acc = sigmoid_run
    assert {f"collapse/weights/{w}" for w in LAYERS} <= set(acc.Tags()["histograms"])
    hist = acc.Histograms("collapse/weights/W1")
    assert [h.step for h in hist] == [0, 1, 2]
    h0 = hist[0].histogram_value
    assert h0.num == sum(h0.bucket) == 100 * 784
    assert -1 / 28 <= h0.min < -0.035 and 0.035 < h0.max <= 1 / 28  # PyTorch's U(+-1/sqrt(784))
    images = acc.Images("collapse/W1_filters")
    assert [i.step for i in images] == [0, 1, 2]
    assert (images[0].width, images[0].height) == (10 * 30, 10 * 30)  # 100 tiles of 28 + pad
    grid = np.asarray(Image.open(io.BytesIO(images[0].encoded_image_string)).convert("L"))
    tile = grid[1:29, 1:29].astype(float)  # the first unit's 784 weights
    assert 100 < tile.mean() < 155 and tile.std() > 10  # grey is 0, spread on +-3 rms of W1(0)


def test_verdict_and_final_numbers_in_metrics_json(sigmoid_run):
    folder, result, acc = sigmoid_run
    saved = json.loads((folder / "metrics.json").read_text())
    assert saved["verdict"] in VERDICTS and saved["verdict"] == result["verdict"]
    # the recorded verdict is the rule's answer on the recorded history
    assert (saved["verdict"], saved["verdict_reason"]) == verdict(saved["diagnostics_history"])
    final = saved["diagnostics"]
    assert final["epoch"] == 2
    assert final["blob/ev"] == pytest.approx(scalars(acc, "blob/ev")[2], abs=1e-6)
    assert final["collapse/norm_ratio/W1"] == pytest.approx(
        scalars(acc, "collapse/norm_ratio/W1")[2], abs=1e-6
    )
    assert len(saved["diagnostics_history"]["blob/ev"]) == 3
    assert len(saved["diagnostics_history"]["loss"]) == 2


def test_relu_units_every_n_epochs_and_no_logger(make_config, tmp_path):
    cfg = make_config(
        *TINY,
        "activation=relu",
        "trainer.max_epochs=3",
        "callbacks.diagnostics.every_n_epochs=2",
        "callbacks.diagnostics.histograms=false",
    )
    result = run(cfg)
    acc = events(tmp_path / "run")
    tags = set(acc.Tags()["scalars"])
    assert {f"units/dead/{h}" for h in HIDDEN} <= tags
    assert not any(t.startswith("units/saturation/h") for t in tags)
    assert sorted(scalars(acc, "blob/ev")) == [0, 2, 3]  # every 2 epochs, and after the last
    dead = recomputed(tmp_path / "run", [*TINY, "activation=relu", "trainer.max_epochs=3"],
                      dg.dead_fraction)
    assert scalars(acc, "units/dead/h1")[3] == pytest.approx(dead, abs=1e-6)
    assert result["diagnostics"]["units/dead/h1"] == pytest.approx(dead, abs=1e-6)
    assert acc.Tags()["histograms"] == []

    quiet = run(make_config(*TINY, "logger=none", name="nolog"))
    assert (quiet["verdict"], quiet["verdict_reason"]) == verdict(quiet["diagnostics_history"])
    assert "blob/ev" in quiet["diagnostics"]


def test_diagnostics_can_be_switched_off(make_config):
    result = run(make_config(*TINY, "~callbacks.diagnostics"))
    assert "verdict" not in result and "diagnostics" not in result


@pytest.mark.parametrize(
    "overrides",
    [
        ["loss=mse"],
        ["loss=bce"],
        ["loss=continuous_bernoulli"],
        ["normalization=symmetric", "activation=tanh"],
        ["normalization=standard", "activation=relu"],
    ],
)
def test_probe_prediction_is_what_reconstruct_returns(make_config, overrides):
    """The callback reuses the traced forward pass; it must give reconstruct()'s prediction."""
    import torch

    from aelab.diagnostics.callback import Diagnostics
    from aelab.training.build import build

    parts = build(make_config(*TINY, *overrides))
    x = parts.data.probe(32)
    with torch.no_grad():
        pre, post = parts.net.trace(x)
        pred = Diagnostics.prediction(parts.module, pre[-1], post[-1])
        assert torch.equal(pred, parts.module.reconstruct(x, normalized=True))
