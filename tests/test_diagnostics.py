"""Every diagnostic on a hand-built input whose answer is known, and the verdict on histories."""

import math

import pytest
import torch

from aelab.diagnostics import metrics as dg
from aelab.diagnostics import verdict as verdicts
from aelab.diagnostics.callback import Diagnostics, filter_grid
from aelab.diagnostics.images import image_grid, tile
from aelab.errors import ConfigError


@pytest.fixture
def images() -> tuple[torch.Tensor, torch.Tensor]:
    """(target, x_bar): 50 random 16-pixel images and a training mean that is not their mean."""
    g = torch.Generator().manual_seed(0)
    target = torch.rand(50, 16, generator=g)
    x_bar = torch.rand(16, generator=g) * 0.5 + 0.25
    return target, x_bar


def close(value: torch.Tensor, expected: float, tol: float = 1e-6) -> bool:
    return abs(float(value) - expected) <= tol


# ---------------------------------------------------------------- blob metrics


def test_mean_image_prediction_is_the_blob_line(images):
    target, x_bar = images
    blob = dg.blob_metrics(x_bar.expand_as(target), target, x_bar)
    assert close(blob["ev"], 0.0) and close(blob["r"], 0.0) and close(blob["d"], 0.0)
    baseline = dg.mean_image_baseline(target, x_bar)
    assert {k: float(v) for k, v in baseline.items()} == {k: float(v) for k, v in blob.items()}
    assert close(baseline["mse"], float((target - x_bar).square().mean()))
    assert float(baseline["bce_excess"]) > 0.01


def test_perfect_reconstruction(images):
    target, x_bar = images
    blob = dg.blob_metrics(target.clone(), target, x_bar)
    assert close(blob["ev"], 1.0) and close(blob["r"], 1.0) and close(blob["d"], 1.0)
    assert close(blob["mse"], 0.0)
    assert abs(float(blob["bce_excess"])) < 1e-5


def test_half_way_to_the_mean_image(images):
    """y = x_bar + (x - x_bar) / 2: EV = 1 - 1/4, and R = D = 1/4 when x_bar is the probe mean."""
    target, _ = images
    x_bar = target.mean(0)
    pred = x_bar + 0.5 * (target - x_bar)
    assert close(dg.explained_variance(pred, target, x_bar), 0.75, 1e-5)
    assert close(dg.variance_ratio(pred, target), 0.25, 1e-5)
    assert close(dg.mean_image_distance(pred, target, x_bar), 0.25, 1e-5)


def test_variance_ratio_of_any_constant_is_zero(images):
    target, _ = images
    constant = torch.full_like(target, 0.3)
    assert float(dg.variance_ratio(constant, target)) == pytest.approx(0.0, abs=1e-12)


def test_binary_entropy_values():
    h = dg.binary_entropy(torch.tensor([0.0, 1.0, 0.5, 0.25]))
    expected = [0.0, 0.0, math.log(2), -(0.25 * math.log(0.25) + 0.75 * math.log(0.75))]
    assert torch.allclose(h, torch.tensor(expected), atol=1e-7)


def test_bce_excess_is_the_kl_to_the_targets():
    """t = 0.5, p = 0.25: BCE = -(ln 0.25 + ln 0.75) / 2, minus H(0.5) = ln 2."""
    target = torch.full((4, 9), 0.5)
    pred = torch.full((4, 9), 0.25)
    expected = -(math.log(0.25) + math.log(0.75)) / 2 - math.log(2)  # 0.143841
    assert close(dg.bce_excess(pred, target), expected, 1e-6)
    assert close(dg.bce_excess(pred, target, torch.logit(pred)), expected, 1e-6)
    assert close(dg.bce_excess(target, target), 0.0, 1e-6)  # grey targets: BCE = H > 0


def test_bce_excess_of_perfect_binary_reconstruction():
    target = (torch.arange(40).reshape(4, 10) % 3 == 0).float()
    assert 0 <= float(dg.bce_excess(target, target)) < 2e-6  # clamped at 1e-6, as pixel_bce
    logits = (target * 2 - 1) * 40
    assert abs(float(dg.bce_excess(torch.sigmoid(logits), target, logits))) < 1e-9


# ---------------------------------------------------------------- weights


def test_weight_scaled_by_a_hundredth():
    w0 = torch.randn(100, 784, generator=torch.Generator().manual_seed(1))
    w = w0 * 0.01
    assert close(dg.norm_ratio(w, w0), 0.01, 1e-7)
    assert close(dg.relative_change(w, w0), 0.99, 1e-6)
    assert close(dg.max_abs(w), 0.01 * float(w0.abs().max()), 1e-7)
    assert float(dg.shrunk_fraction(w, w0, 0.1)) == 1.0
    assert float(dg.shrunk_fraction(w0, w0, 0.1)) == 0.0
    assert float(dg.relative_change(w0, w0)) == 0.0


def test_shrunk_fraction_counts_rows():
    w0 = torch.ones(4, 3)
    w = w0 * torch.tensor([[1.0], [0.05], [0.5], [0.01]])
    assert float(dg.shrunk_fraction(w, w0, 0.1)) == 0.5
    assert float(dg.shrunk_fraction(w, w0, 0.6)) == 0.75


def test_max_abs_sees_negative_weights():
    assert float(dg.max_abs(torch.tensor([[0.1, -0.7], [0.3, 0.2]]))) == pytest.approx(0.7)


def test_effective_rank():
    g = torch.Generator().manual_seed(2)
    rank3 = torch.randn(100, 3, generator=g) @ torch.randn(3, 50, generator=g)
    assert 1.0 < float(dg.effective_rank(rank3)) <= 3.0
    assert close(dg.effective_rank(torch.eye(7)), 7.0, 1e-5)
    assert close(dg.effective_rank(torch.diag(torch.tensor([2.0, 2.0, 0.0]))), 2.0, 1e-5)
    ones = torch.ones(1000, 50) * 0.37  # constant codes: a blob's code layer
    assert close(dg.effective_rank(ones), 1.0, 1e-5)
    assert float(dg.effective_rank(torch.zeros(5, 4))) == 0.0
    assert math.isnan(float(dg.effective_rank(torch.tensor([[1.0, float("nan")]]))))


@pytest.mark.parametrize("shape", [(100, 784), (1000, 50), (7, 7)])
def test_singular_values_from_the_gram_are_torchs(shape):
    """effective_rank's singular values (eigenvalues of the smaller Gram matrix) against
    torch.linalg.svdvals, on a random matrix and on one of rank 3 (its zeros stay zeros)."""
    g = torch.Generator().manual_seed(0)
    full = torch.randn(*shape, generator=g)
    low = torch.randn(shape[0], 3, generator=g) @ torch.randn(3, shape[1], generator=g)
    for m in (full, low):
        reference = torch.linalg.svdvals(m.double())
        ours = dg.singular_values(m)
        assert ours.shape == reference.shape
        torch.testing.assert_close(ours, reference, rtol=0, atol=1e-7 * float(reference[0]))
    assert int((dg.singular_values(low) > 0).sum()) == 3


# ---------------------------------------------------------------- units


def test_saturation_thresholds_are_the_same_tail():
    """sigmoid(4.6) = 0.99; tanh(2.3) = 2 sigmoid(4.6) - 1: both 1% of the range from the end."""
    assert torch.sigmoid(torch.tensor(dg.SIGMOID_SATURATION)).item() == pytest.approx(0.99, 1e-3)
    assert dg.TANH_SATURATION == dg.SIGMOID_SATURATION / 2
    tail = (1 - torch.tanh(torch.tensor(dg.TANH_SATURATION)).item()) / 2
    assert tail == pytest.approx(1 - torch.sigmoid(torch.tensor(4.6)).item(), rel=1e-5)


def test_saturation_fraction():
    pre = torch.tensor([[-5.0, -4.0, 0.0], [4.7, 10.0, 2.4]])
    assert float(dg.saturation_fraction(pre, dg.SIGMOID_SATURATION)) == pytest.approx(3 / 6)
    assert float(dg.saturation_fraction(pre, dg.TANH_SATURATION)) == pytest.approx(5 / 6)


def test_exact_bound_count_of_float32_sigmoid():
    y = torch.sigmoid(torch.tensor([-200.0, -10.0, 0.0, 10.0, 20.0, 200.0]))
    assert int(dg.exact_bound_count(y)) == 3  # 0.0, 1.0, 1.0: log(p) or log(1-p) is -inf
    assert int(dg.exact_bound_count(torch.tensor([-1.0, 0.0, 1.0]), -1.0, 1.0)) == 2


def test_dead_fraction():
    pre = torch.tensor(
        [
            [-1.0, 2.0, 0.0, 0.5],
            [-0.5, -3.0, 0.0, 0.1],
            [-2.0, -1.0, 0.0, 3.0],
        ]
    )  # unit 0 always negative, unit 2 always 0: dead; units 1 and 3 fire somewhere
    assert float(dg.dead_fraction(pre)) == 0.5


def test_input_dependence():
    act = torch.tensor([[0.3, 0.0], [0.3, 2.0]])  # std over samples: 0 and 1
    assert float(dg.input_dependence(act)) == pytest.approx(0.5)
    assert float(dg.input_dependence(torch.full((10, 4), 0.7))) == pytest.approx(0.0, abs=1e-7)


def test_update_ratio():
    w_prev = torch.ones(2, 2)  # norm 2
    assert float(dg.update_ratio(w_prev + 0.002, w_prev)) == pytest.approx(0.002, rel=1e-4)
    assert float(dg.update_ratio(w_prev, w_prev)) == 0.0


def test_per_layer_norms_and_update_ratios():
    layers = [torch.full((3, 4), 0.5), torch.full((2, 2), -3.0)]  # norms sqrt(12)/2 and 6
    norms = dg.frobenius_norms(layers)
    assert [float(n) for n in norms] == pytest.approx([math.sqrt(12) / 2, 6.0])
    stepped = [layers[0] * 1.01, layers[1] - 0.06]  # steps of 1% and 0.12 / 6 = 2%
    assert [float(r) for r in dg.update_ratios(stepped, layers)] == pytest.approx([0.01, 0.02])


# ---------------------------------------------------------------- verdict


def history(**values: list[float]) -> dict[str, list[float]]:
    base = {
        "loss": [0.07, 0.05, 0.03],
        "epoch": [0, 1, 2],
        "blob/ev": [0.0, 0.3, 0.6],
        "blob/mse": [0.07, 0.05, 0.03],
        "collapse/norm_ratio/W1": [1.0, 1.1, 1.3],
        "collapse/shrunk_units/W1": [0.0, 0.0, 0.0],
        "collapse/max_abs/W1": [0.036, 0.05, 0.07],
        "collapse/change/W1": [0.0, 0.4, 0.8],
        "collapse/change/W2": [0.0, 0.2, 0.3],
        "units/saturation/h1": [0.0, 0.05, 0.1],
        "units/saturation/h2": [0.0, 0.0, 0.02],
    }
    return base | {k.replace("__", "/"): v for k, v in values.items()}


def test_verdict_healthy():
    assert verdicts.verdict(history()) == ("healthy", "EV = 0.6")


def test_verdict_blob():
    name, reason = verdicts.verdict(history(blob__ev=[0.0, 0.01, 0.02]))
    assert name == "blob" and "EV = 0.02" in reason


def test_verdict_collapsed_by_norm_wins_over_blob():
    h = history(blob__ev=[0.0, 0.0, 0.0], collapse__norm_ratio__W1=[1.0, 0.2, 0.04])
    name, reason = verdicts.verdict(h)
    assert name == "collapsed" and "0.04" in reason


def test_verdict_collapsed_by_shrunk_units():
    h = history(collapse__norm_ratio__W1=[1.0, 0.9, 0.8], collapse__shrunk_units__W1=[0, 0.3, 0.7],
                blob__ev=[0.0, 0.02, 0.03])
    assert verdicts.verdict(h)[0] == "collapsed"


def test_a_shrunk_w1_that_still_explains_the_images_is_healthy():
    """EV 0.23 with W1 at 0.47 of its norm (ReLU, L2 1e-3, README): not collapsed."""
    h = history(collapse__norm_ratio__W1=[1.0, 0.6, 0.47], collapse__shrunk_units__W1=[0, .4, .7],
                blob__ev=[0.0, 0.2, 0.23])
    name, reason = verdicts.verdict(h)
    assert name == "healthy" and "0.47" in reason


def test_verdict_frozen_for_dead_relu_units_however_far_the_weights_moved():
    h = history(units__dead__h1=[0.0, 0.3, 0.4], units__dead__h2=[0.0, 0.99, 1.0],
                blob__ev=[0.0, -0.01, -0.02], collapse__change__W1=[0.0, 3.0, 5.0])
    name, reason = verdicts.verdict(h)
    assert name == "frozen" and "100% of h2 dead" in reason
    assert verdicts.verdict(history(units__dead__h2=[0.0, 0.6, 0.6], blob__ev=[0, 0, 0.02]))[
        0] == "blob"  # 60% dead and the weights moved: a blob


def test_verdict_posterior_collapse_by_the_kl_alone():
    """The README's collapsed VAEs: KL <= 0.2 nats with 1.7-2.3 "active" units."""
    h = history(blob__ev=[0.0, 0.02, 0.03], latent__kl_total=[3.0, 0.5, 0.2],
                latent__active_units=[5, 3, 2])
    name, reason = verdicts.verdict(h)
    assert name == "posterior_collapse" and "KL = 0.2 < 1" in reason
    assert verdicts.verdict(history(latent__kl_total=[3.0, 2.0, 1.8]))[0] == "healthy"


def test_provisional_when_short_or_still_improving():
    assert verdicts.provisional(history(epoch=[0, 1], blob__ev=[0.0, 0.05])) == \
        "only 1 training epoch(s) measured"
    assert "EV still rising 0.3" in verdicts.provisional(history())
    flat = history(epoch=[0, 1, 2, 3], blob__ev=[-2.5, -0.2, -0.19, -0.185])
    assert verdicts.provisional(flat) is None


def test_verdict_uses_the_final_values_only():
    h = history(collapse__norm_ratio__W1=[1.0, 0.1, 1.2], blob__ev=[0.0, -0.1, 0.5])
    assert verdicts.verdict(h)[0] == "healthy"


def test_verdict_frozen():
    frozen = dict(
        collapse__change__W1=[0.0, 0.01, 0.02],
        collapse__change__W2=[0.0, 0.01, 0.01],
        units__saturation__h1=[0.9, 0.9, 0.9],
        units__saturation__h2=[0.7, 0.7, 0.7],
        blob__ev=[-0.5, -0.4, -0.4],
    )
    name, reason = verdicts.verdict(history(**frozen))
    assert name == "frozen" and "90% of h1" in reason
    one_layer = frozen | dict(units__saturation__h1=[0.1] * 3)  # h2 still 70% in the tails
    assert verdicts.verdict(history(**one_layer))[0] == "frozen"
    not_saturated = frozen | dict(units__saturation__h1=[0.1] * 3, units__saturation__h2=[0.4] * 3)
    assert verdicts.verdict(history(**not_saturated))[0] == "blob"
    moved = frozen | dict(collapse__change__W2=[0.0, 0.1, 0.2])
    assert verdicts.verdict(history(**moved))[0] == "blob"


def test_verdict_diverged():
    nan, inf = float("nan"), float("inf")
    assert verdicts.verdict(history(loss=[0.07, nan, 0.03]))[0] == "diverged"
    assert verdicts.verdict(history(blob__mse=[0.07, 0.05, nan]))[0] == "diverged"
    name, reason = verdicts.verdict(history(collapse__max_abs__W1=[0.03, inf, inf]))
    assert name == "diverged" and "collapse/max_abs/W1" in reason
    # a 0/0 elsewhere (e.g. R of a constant probe) is not a divergence
    assert verdicts.verdict(history(units__input_dependence__h1=[nan]))[0] == "healthy"


def test_verdict_thresholds_are_configurable():
    strict = verdicts.Thresholds.from_mapping({"blob_ev": 0.7})
    assert verdicts.verdict(history(), strict)[0] == "blob"
    lax = verdicts.Thresholds.from_mapping({"collapse_norm_ratio": 0.01})
    assert verdicts.verdict(history(collapse__norm_ratio__W1=[1, 0.1, 0.04]), lax)[0] == "healthy"
    with pytest.raises(ConfigError, match="blob_evv"):
        verdicts.Thresholds.from_mapping({"blob_evv": 0.1})


def test_verdict_of_an_empty_history():
    assert verdicts.verdict({})[0] == "unknown"  # nothing measured: no verdict of health
    assert verdicts.verdict({"loss": [float("nan")]})[0] == "diverged"


# ---------------------------------------------------------------- callback state


def test_callback_state_survives_a_checkpoint():
    cb = Diagnostics(every_n_epochs=2, thresholds={"blob_ev": 0.2})
    cb.history = history(blob__ev=[0.0, 0.1, 0.15])
    cb.w0 = [torch.ones(3, 2)]
    again = Diagnostics(every_n_epochs=2, thresholds={"blob_ev": 0.2})
    again.load_state_dict(cb.state_dict())
    assert again.history == cb.history and torch.equal(again.w0[0], cb.w0[0])
    summary = again.summary()
    assert summary["verdict"] == "blob" and summary["diagnostics"]["blob/ev"] == 0.15
    assert "loss" not in summary["diagnostics"]
    assert again.summary(diverged="loss became nan")["verdict"] == "diverged"


def test_callback_rejects_bad_knobs():
    with pytest.raises(ConfigError, match="every_n_epochs"):
        Diagnostics(every_n_epochs=0)
    with pytest.raises(ConfigError, match="sample_every"):
        Diagnostics(sample_every=0)


def test_callback_averages_gradient_norms_and_updates_over_sampled_steps():
    """Steps with known gradients and known updates, fed through the per-step hooks."""
    from types import SimpleNamespace

    from torch import nn

    linears = nn.ModuleList([nn.Linear(2, 2, bias=False), nn.Linear(2, 2, bias=False)])
    module = SimpleNamespace(net=SimpleNamespace(weight_layers=lambda: list(linears)))
    for lin in linears:
        nn.init.constant_(lin.weight, 1.0)  # ||W|| = 2

    def run_steps(cb: Diagnostics, n: int, steps_per_call: int = 1) -> None:
        """n optimiser steps, each seen by the optimizer hook; a training batch of
        `steps_per_call` of them ends after every `steps_per_call`-th."""
        for step in range(1, n + 1):
            for lin in linears:
                lin.weight.grad = torch.full((2, 2), float(step))  # ||g|| = 2 * step
            trainer = SimpleNamespace(global_step=step - 1)  # steps done before this one
            cb.on_before_optimizer_step(trainer, module, None)
            with torch.no_grad():
                for lin in linears:
                    lin.weight.mul_(1 + 0.01 * step)  # realised update ratio 0.01 * step
            if step % steps_per_call == 0:
                cb.on_train_batch_end(trainer, module, None, None, step - 1)

    every = Diagnostics(sample_every=1)
    run_steps(every, 4)
    assert [float(g) / every._grad_steps for g in every._grad_sum] == pytest.approx([5.0, 5.0])
    ratios = [float(r) / every._update_steps for r in every._update_sum]
    assert ratios == pytest.approx([0.025, 0.025], rel=1e-4)  # mean of 0.01 .. 0.04

    sampled = Diagnostics(sample_every=2)
    run_steps(sampled, 4)  # steps 1 and 3 are measured
    assert sampled._grad_steps == sampled._update_steps == 2
    assert float(sampled._grad_sum[0]) / 2 == pytest.approx(4.0)  # (2 + 6) / 2
    assert float(sampled._update_sum[1]) / 2 == pytest.approx(0.02, rel=1e-4)  # (.01 + .03) / 2

    # steps_per_call=3 (batches end after steps 3, 6, 9, 12): sample_every=5 takes the first
    # step of each window of 5 (global steps 0-4, 5-9, 10-14): steps 1, 6 and 11, and each
    # sampled update is that one step's, measured at the next hook, not the batch's end
    chunked = Diagnostics(sample_every=5)
    run_steps(chunked, 12, steps_per_call=3)
    assert chunked._grad_steps == chunked._update_steps == 3
    assert float(chunked._grad_sum[0]) / 3 == pytest.approx(2 * (1 + 6 + 11) / 3)
    assert float(chunked._update_sum[0]) / 3 == pytest.approx(0.01 * (1 + 6 + 11) / 3, rel=1e-4)


# ---------------------------------------------------------------- image grids (make_grid)


def test_image_grid_frames_each_tile_as_make_grid_does():
    """3 grey 2x2 tiles of 0.1, 0.2, 0.3 in 2 columns, 1 px of white around each tile:
    make_grid's 2 px between tiles, its outer 2 px cut to 1, grey kept grey."""
    cells = torch.tensor([0.1, 0.2, 0.3]).view(3, 1, 1, 1).expand(3, 1, 2, 2)
    grid = image_grid(cells, columns=2, pad=1, pad_value=1.0)
    W, a, b, c = 1.0, 0.1, 0.2, 0.3
    expected = torch.tensor([
        [W, W, W, W, W, W, W, W],
        [W, a, a, W, W, b, b, W],
        [W, a, a, W, W, b, b, W],
        [W, W, W, W, W, W, W, W],
        [W, W, W, W, W, W, W, W],
        [W, c, c, W, W, W, W, W],
        [W, c, c, W, W, W, W, W],
        [W, W, W, W, W, W, W, W],
    ])
    assert torch.equal(grid, expected.unsqueeze(0))
    from torchvision.utils import make_grid

    whole = make_grid(cells, nrow=2, padding=2, pad_value=1.0)  # (3, 10, 10): RGB, 2 px frame
    assert torch.equal(grid, whole[:1, 1:-1, 1:-1])
    lone = image_grid(cells[:1], columns=4, pad=1, pad_value=0.5)  # make_grid: no frame for one
    assert torch.equal(lone, torch.tensor([[0.5] * 4, [0.5, a, a, 0.5], [0.5, a, a, 0.5],
                                           [0.5] * 4]).unsqueeze(0))


def test_tile_keeps_colour_and_flat_images():
    red, blue = torch.zeros(3, 1, 2), torch.zeros(3, 1, 2)
    red[0], blue[2] = 1.0, 1.0
    grid = tile(torch.stack([red, blue]).flatten(1), columns=2, pad=0, shape=(3, 1, 2))
    assert torch.equal(grid, torch.cat([red, blue], dim=2))  # side by side, RGB kept, no frame
    grey = tile(torch.full((4, 9), 0.25), columns=2, pad=1, pad_value=0.0)  # square 3x3 tiles
    assert grey.shape == (1, 2 * 5, 2 * 5) and float(grey.sum()) == 4 * 9 * 0.25
    with pytest.raises(ValueError, match="not square"):
        tile(torch.rand(2, 18), columns=2)


def test_filter_grid_is_a_square_of_enlarged_tiles():
    grid = filter_grid(torch.full((4, 1, 3, 3), 0.25))  # 2 x 2 tiles of 12 px, 1 px padding
    assert grid.shape == (1, 28, 28)
    assert torch.equal(grid[0, 1:13, 1:13], torch.full((12, 12), 0.25))
    assert torch.equal(grid[0, 1:13, 13:15], torch.ones(12, 2))  # 2 px of white between tiles
    assert float(grid[0, 0, 0]) == 1.0
    colour = filter_grid(torch.rand(5, 3, 8, 8))  # 5 RGB tiles of 16 px: 3 columns, 2 rows
    assert colour.shape == (3, 2 * 18, 3 * 18)
    assert torch.equal(colour[:, 19:, 37:], torch.ones(3, 17, 17))  # the sixth place is blank
    four = filter_grid(torch.rand(2, 4, 3, 3))  # 4 channels: a grey tile per unit and channel
    assert four.shape == (1, 3 * 14, 3 * 14)


def test_split_norms_separate_the_data_term_from_the_penalty_by_hand():
    """W1 = ones(2, 2) (norm 2), l2_penalty 0.5 (2 l2 W1 = W1 in the gradient), weight decay
    0.1: a gradient of 4s holds a data term of 3s (norm 6); the penalty pulls with
    (2 * 0.5 + 0.1) * 2 = 2.2. Two models at once give each its own."""
    from types import SimpleNamespace

    from aelab.diagnostics.gradients import row_split_norms, split_norms

    layer = torch.nn.Linear(2, 2, bias=False)
    with torch.no_grad():
        layer.weight.fill_(1.0)
    layer.weight.grad = torch.full((2, 2), 4.0)
    optimizer = torch.optim.SGD(layer.parameters(), lr=0.1, weight_decay=0.1)
    module = SimpleNamespace(l2_penalty=0.5)
    torch.testing.assert_close(split_norms(module, optimizer, layer), torch.tensor([6.0, 2.2]))
    rows = row_split_norms(torch.full((2, 4), 4.0), torch.ones(2, 4),
                           torch.tensor([0.5, 0.0]), torch.tensor([0.1, 0.0]))
    torch.testing.assert_close(rows, torch.tensor([[6.0, 2.2], [8.0, 0.0]]))
