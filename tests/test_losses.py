"""Every reconstruction loss against its formula on small hand-computed tensors (and torch)."""

import math
from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf
from torch.distributions import ContinuousBernoulli as TorchCB

from aelab.__main__ import CONFIG_DIR
from aelab.data.domains import REAL, UNIT
from aelab.errors import ConfigError
from aelab.losses import (
    BCE,
    L1,
    MSE,
    BCEExcess,
    ClampedProbabilityBCE,
    ContinuousBernoulli,
    DoubleSigmoidBCE,
    GaussianNLL,
    Huber,
    NaivePositiveCrossEntropy,
    SoftmaxPixelCrossEntropy,
    SwappedLogitsBCE,
    SwappedProbabilityBCE,
    UnclampedProbabilityBCE,
    binary_entropy,
    cb_log_norm,
    cb_mean,
    reduce,
)
from aelab.losses.reconstruction import CB_LOG_NORM_TAYLOR, CB_MEAN_TAYLOR

LOSS_FILES = sorted((Path(CONFIG_DIR) / "loss").glob("*.yaml"))


def apply(loss, logits, target):
    """Per-pixel values of `loss` for these logits, with a sigmoid output."""
    return loss.per_pixel(logits, torch.sigmoid(logits), target)


def logit(p: float) -> float:
    return math.log(p / (1 - p))


# --- config files ---------------------------------------------------------------------------


@pytest.mark.parametrize("path", LOSS_FILES, ids=lambda p: p.stem)
def test_every_loss_file_builds_the_loss_it_names(path):
    cfg, name, preset = OmegaConf.load(path), path.stem, {}
    if "defaults" in cfg:  # a preset of another loss file (mse_sigma_tuned: mse, sigma 0.1)
        (name,) = [d for d in cfg.defaults if d != "_self_"]
        preset = {k: v for k, v in cfg.items() if k != "defaults"}
        cfg = OmegaConf.merge(OmegaConf.load(path.parent / f"{name}.yaml"), preset)
    loss = instantiate(cfg)
    assert loss.name == name and preset == {k: getattr(loss, k) for k in preset}
    assert loss.reduction == "mean"
    assert loss.target_range in (UNIT, REAL)
    z, t = torch.zeros(2, 4), torch.full((2, 4), 0.5)
    assert torch.isfinite(loss(z, torch.sigmoid(z), t))


# --- reductions and the existing losses -------------------------------------------------------


def test_reductions_on_a_hand_tensor():
    per_pixel = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
    assert reduce(per_pixel, "mean").item() == pytest.approx(3.5)
    assert reduce(per_pixel, "image_sum").item() == pytest.approx(10.5)  # (6 + 15) / 2
    assert reduce(per_pixel, "batch_sum").item() == pytest.approx(21.0)
    with pytest.raises(ConfigError, match="loss.reduction='sum' is unknown"):
        MSE(reduction="sum")


def test_mse_and_l1():
    recon, target = torch.tensor([[0.2, 0.9, 0.5]]), torch.tensor([[0.0, 1.0, 0.5]])
    mse, l1 = MSE().per_pixel(None, recon, target), L1().per_pixel(None, recon, target)
    torch.testing.assert_close(mse, torch.tensor([[0.04, 0.01, 0]]))
    torch.testing.assert_close(l1, torch.tensor([[0.2, 0.1, 0]]))
    assert MSE()(None, recon, target).item() == pytest.approx(0.05 / 3)


def test_huber_is_quadratic_below_its_threshold_and_linear_above():
    huber = Huber(delta=0.1)
    target = torch.zeros(1, 4)
    recon = torch.tensor([[0.05, 0.1, -0.1, 0.3]])
    expected = torch.tensor([[0.5 * 0.05**2, 0.5 * 0.1**2, 0.5 * 0.1**2, 0.1 * (0.3 - 0.05)]])
    torch.testing.assert_close(huber.per_pixel(None, recon, target), expected)
    # both branches meet at |e| = delta: 0.5 delta^2 = delta (delta - delta / 2)
    at_threshold = huber.per_pixel(None, torch.tensor([[0.1 - 1e-6, 0.1 + 1e-6]]), target[:, :2])
    assert at_threshold[0, 0].item() == pytest.approx(at_threshold[0, 1].item(), abs=1e-6)
    with pytest.raises(ConfigError, match="loss.delta=0"):
        Huber(delta=0)


def test_bce_from_logits_matches_the_probability_form():
    z = torch.tensor([[0.0, math.log(3), logit(0.8), -2.0, 5.0]], dtype=torch.float64)
    t = torch.tensor([[1.0, 1.0, 0.8, 0.3, 0.0]], dtype=torch.float64)
    p = torch.sigmoid(z)
    expected = -(t * p.log() + (1 - t) * (1 - p).log())
    got = apply(BCE(), z, t)
    torch.testing.assert_close(got, expected)
    assert got[0, 0].item() == pytest.approx(math.log(2))
    assert got[0, 1].item() == pytest.approx(-math.log(0.75))
    assert got[0, 2].item() == pytest.approx(binary_entropy(torch.tensor(0.8)).item())


def test_bce_from_logits_is_finite_where_the_probabilities_round_to_0_or_1():
    z = torch.tensor([[-200.0, 200.0]])  # float32 sigmoid: exactly 0 and 1
    t = torch.tensor([[1.0, 0.0]])
    z.requires_grad_(True)
    loss = apply(BCE(), z, t)
    torch.testing.assert_close(loss.detach(), torch.tensor([[200.0, 200.0]]))
    loss.sum().backward()
    torch.testing.assert_close(z.grad, torch.tensor([[-1.0, 1.0]]))  # p - t


def test_binary_entropy():
    t = torch.tensor([0.0, 0.5, 0.8, 1.0], dtype=torch.float64)
    h08 = -(0.8 * math.log(0.8) + 0.2 * math.log(0.2))
    torch.testing.assert_close(binary_entropy(t), torch.tensor([0, math.log(2), h08, 0.0]).double())


# --- continuous Bernoulli --------------------------------------------------------------------


def test_continuous_bernoulli_on_hand_values():
    # l = 1/2: the uniform density, -log p = 0 for every x
    z0 = torch.zeros(1, 3)
    torch.testing.assert_close(
        apply(ContinuousBernoulli(), z0, torch.tensor([[0.0, 0.3, 1.0]])), torch.zeros(1, 3)
    )
    # l = 3/4 (z = log 3): C = 2 artanh(-1/2) / (-1/2) = 2 log 3
    z = torch.tensor([[math.log(3)]], dtype=torch.float64)
    log_c = math.log(2 * math.log(3))
    assert cb_log_norm(z).item() == pytest.approx(log_c)
    one = apply(ContinuousBernoulli(), z, torch.ones_like(z)).item()
    assert one == pytest.approx(-math.log(0.75) - log_c)
    # mean mu(3/4) = 0.75 / 0.5 + 1 / (2 artanh(-1/2)) = 1.5 - 1 / log 3
    assert cb_mean(z).item() == pytest.approx(1.5 - 1 / math.log(3))
    assert ContinuousBernoulli().prediction(z, torch.sigmoid(z)).item() == pytest.approx(
        1.5 - 1 / math.log(3)
    )


def test_continuous_bernoulli_log_norm_taylor_expansion_near_one_half():
    d = torch.tensor([1e-4, 0.01, 0.03], dtype=torch.float64)  # l - 1/2, inside the Taylor zone
    z = torch.log((0.5 + d) / (0.5 - d))
    expected = math.log(2) + 4 / 3 * d**2 + 104 / 45 * d**4
    torch.testing.assert_close(cb_log_norm(z), expected)
    # the closed form log(z / tanh(z / 2)) agrees wherever it is accurate
    zs = torch.tensor([-8.0, -1.0, -0.21, 0.21, 1.0, 8.0], dtype=torch.float64)
    torch.testing.assert_close(cb_log_norm(zs), torch.log(zs / torch.tanh(zs / 2)))


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_continuous_bernoulli_matches_torch(dtype):
    z = torch.cat([torch.linspace(-12, 12, 241), torch.tensor([0.0, 1e-6, -1e-3, 2e-3])])
    z = z.to(dtype).unsqueeze(1).expand(-1, 5)
    x = torch.tensor([0.0, 0.1, 0.5, 0.93, 1.0], dtype=dtype).expand_as(z)
    reference = TorchCB(logits=z.double())
    # float64: the two-term Taylor expansion of log C drops ~5.7 (l - 1/2)^6 < 1e-7
    tol = {"atol": 1e-7, "rtol": 1e-9} if dtype == torch.float64 else {"atol": 2e-5, "rtol": 1e-5}
    torch.testing.assert_close(
        apply(ContinuousBernoulli(), z, x).double(), -reference.log_prob(x.double()), **tol
    )
    torch.testing.assert_close(cb_mean(z).double(), reference.mean, **tol)


def test_continuous_bernoulli_is_a_normalised_density_with_that_mean():
    x = torch.linspace(0, 1, 20001, dtype=torch.float64)
    for zi in (-7.0, -0.5, 0.05, 2.0):
        z = torch.full_like(x, zi)
        density = torch.exp(-apply(ContinuousBernoulli(), z, x))
        assert torch.trapezoid(density, x).item() == pytest.approx(1.0, abs=1e-7)
        assert torch.trapezoid(x * density, x).item() == pytest.approx(cb_mean(z[:1]).item())


def test_continuous_bernoulli_is_smooth_across_its_taylor_zones_with_finite_gradients():
    z_log_norm = 2 * math.atanh(2 * CB_LOG_NORM_TAYLOR)  # |l - 1/2| = threshold
    for edge, fn in ((z_log_norm, cb_log_norm), (CB_MEAN_TAYLOR, cb_mean)):
        for sign in (1, -1):
            pair = torch.tensor([sign * edge * (1 - 1e-6), sign * edge * (1 + 1e-6)])
            values = fn(pair)
            assert (values[1] - values[0]).abs().item() < 1e-6
    z = torch.tensor([0.0, 1e-7, -1e-4, 0.1, 0.2, 0.5, 3.0, -40.0, 80.0], requires_grad=True)
    x = torch.full_like(z, 0.3)
    loss = ContinuousBernoulli()
    (loss(z, torch.sigmoid(z), x) + loss.prediction(z, None).sum()).backward()
    assert torch.isfinite(z.grad).all()
    assert cb_mean(torch.zeros(3)).tolist() == [0.5, 0.5, 0.5]
    assert torch.isfinite(cb_log_norm(torch.tensor([0.0, -100.0, 100.0]))).all()


# --- BCE minus the target entropy ------------------------------------------------------------


def test_bce_excess_is_zero_at_a_perfect_reconstruction_and_bce_minus_entropy_elsewhere():
    t = torch.tensor([[0.05, 0.3, 0.5, 0.8, 0.99]], dtype=torch.float64)
    z_perfect = torch.log(t / (1 - t))
    torch.testing.assert_close(apply(BCEExcess(), z_perfect, t), torch.zeros_like(t))
    # binary targets: the excess is the BCE itself, and tends to 0 as the logits saturate
    tb = torch.tensor([[0.0, 1.0]], dtype=torch.float64)
    assert apply(BCEExcess(), torch.tensor([[-30.0, 30.0]]).double(), tb).abs().max() < 1e-12
    z = torch.zeros(1, 5, dtype=torch.float64)
    expected = math.log(2) - binary_entropy(t)
    torch.testing.assert_close(apply(BCEExcess(), z, t), expected)
    assert apply(BCEExcess(), z, t)[0, 3].item() == pytest.approx(0.19274475, abs=1e-8)
    # same gradient as BCE
    zg = torch.randn(3, 5, requires_grad=True)
    tt = torch.rand(3, 5)
    g1 = torch.autograd.grad(BCEExcess()(zg, torch.sigmoid(zg), tt), zg)[0]
    g2 = torch.autograd.grad(BCE()(zg, torch.sigmoid(zg), tt), zg)[0]
    torch.testing.assert_close(g1, g2)


# --- Gaussian NLL with a learned variance -----------------------------------------------------


def test_gaussian_nll_on_hand_values_and_against_torch():
    loss = GaussianNLL(init_log_var=0.0)
    recon, target = torch.tensor([[0.5, 0.0]]), torch.tensor([[0.5, 1.0]])
    expected = torch.tensor([[0.5 * math.log(2 * math.pi), 0.5 * (math.log(2 * math.pi) + 1)]])
    torch.testing.assert_close(loss.per_pixel(None, recon, target), expected)

    s = -1.7
    loss = GaussianNLL(init_log_var=s)
    recon, target = torch.rand(4, 6), torch.randn(4, 6) * 2  # any targets
    normal = torch.distributions.Normal(recon, math.exp(s / 2))
    torch.testing.assert_close(loss.per_pixel(None, recon, target), -normal.log_prob(target))
    torch_nll = torch.nn.GaussianNLLLoss(full=True, reduction="mean", eps=0.0)
    torch.testing.assert_close(
        loss(None, recon, target), torch_nll(recon, target, torch.full_like(recon, math.exp(s)))
    )
    assert loss.target_range == REAL and loss.output_activation is None


def test_gaussian_nll_log_variance_is_a_trained_parameter_with_the_mse_optimum():
    loss = GaussianNLL()
    assert [name for name, _ in loss.named_parameters()] == ["log_var"]
    recon, target = torch.zeros(8, 10), torch.full((8, 10), 0.3)
    # d/ds mean = 0.5 (1 - mse exp(-s)), zero at exp(s) = mse
    (grad,) = torch.autograd.grad(loss(None, recon, target), loss.log_var)
    assert grad.item() == pytest.approx(0.5 * (1 - 0.09))
    with torch.no_grad():
        loss.log_var.fill_(math.log(0.09))
    (grad,) = torch.autograd.grad(loss(None, recon, target), loss.log_var)
    assert grad.item() == pytest.approx(0.0, abs=1e-6)


# --- the 2017 mistakes (H4-H6) ---------------------------------------------------------------


def test_naive_positive_cross_entropy_keeps_only_the_positive_term():
    loss = NaivePositiveCrossEntropy()
    recon = torch.tensor([[0.25, 0.25, 0.9, 1.0]])
    target = torch.tensor([[0.5, 0.0, 1.0, 0.3]])
    expected = torch.tensor([[0.5 * math.log(4), 0.0, -math.log(0.9), 0.0]])
    torch.testing.assert_close(loss.per_pixel(None, recon, target), expected)
    # minimised by p = 1 whatever the target: it prefers a white image to the target itself
    t = torch.tensor([[0.2]])
    assert loss.per_pixel(None, torch.ones(1, 1), t) < loss.per_pixel(None, t, t)


def test_naive_positive_cross_entropy_clamp_and_its_absence():
    z = torch.tensor([[-200.0, -200.0]], requires_grad=True)  # sigmoid rounds to exactly 0
    t = torch.tensor([[1.0, 0.0]])
    clamped = apply(NaivePositiveCrossEntropy(eps=1e-10), z, t)
    torch.testing.assert_close(clamped.detach(), torch.tensor([[-math.log(1e-10), 0.0]]))
    clamped.sum().backward()
    assert z.grad.abs().max() == 0  # the clamp passes no gradient
    raw = apply(NaivePositiveCrossEntropy(eps=0.0), z.detach(), t)
    assert math.isinf(raw[0, 0].item()) and math.isnan(raw[0, 1].item())
    with pytest.raises(ConfigError, match="loss.eps"):
        NaivePositiveCrossEntropy(eps=-1e-3)


def test_double_sigmoid_bce_applies_the_logits_loss_to_probabilities():
    z = torch.tensor([[0.0, 3.0, -3.0]], dtype=torch.float64, requires_grad=True)
    t = torch.tensor([[1.0, 0.0, 0.7]], dtype=torch.float64)
    got = apply(DoubleSigmoidBCE(), z, t)
    q = torch.sigmoid(torch.sigmoid(z))  # what the loss sees as its prediction
    torch.testing.assert_close(got, -(t * q.log() + (1 - t) * (1 - q).log()))
    assert got[0, 0].item() == pytest.approx(-math.log(1 / (1 + math.exp(-0.5))))
    assert q.min() > 0.5 and q.max() < 1 / (1 + math.exp(-1))
    got.sum().backward()
    p = torch.sigmoid(z.detach())
    torch.testing.assert_close(z.grad, (torch.sigmoid(p) - t) * p * (1 - p))
    # the shown reconstruction is the network's output, not sigmoid(sigmoid(z))
    assert DoubleSigmoidBCE().prediction(z, p) is p


def test_clamped_probability_bce_equals_bce_where_nothing_is_clamped():
    z = torch.tensor([[-4.0, -0.5, 0.0, 2.0, 6.0]], dtype=torch.float64)
    t = torch.tensor([[0.0, 0.2, 0.5, 0.9, 1.0]], dtype=torch.float64)
    for eps in (0.0, 1e-7):
        torch.testing.assert_close(apply(ClampedProbabilityBCE(eps=eps), z, t), apply(BCE(), z, t))


def test_clamped_probability_bce_reproduces_inf_nan_without_eps_and_dead_gradients_with_it():
    z = torch.tensor([[20.0, 20.0, -120.0]], requires_grad=True)  # float32: p = 1, 1, 0 exactly
    t = torch.tensor([[0.5, 1.0, 0.5]])
    assert torch.sigmoid(z)[0, :2].eq(1).all() and torch.sigmoid(z)[0, 2] == 0
    raw = apply(ClampedProbabilityBCE(eps=0.0), z.detach(), t)
    assert math.isinf(raw[0, 0].item()) and math.isnan(raw[0, 1].item())
    assert math.isinf(raw[0, 2].item())
    clipped = apply(ClampedProbabilityBCE(eps=1e-7), z, t)
    assert torch.isfinite(clipped).all()
    top = torch.tensor(1 - 1e-7).item()  # 1 - eps in float32: 1 - 1.19e-7
    assert clipped[0, 0].item() == pytest.approx(-0.5 * (math.log(top) + math.log(1 - top)))
    clipped.sum().backward()
    assert z.grad.abs().max() == 0  # saturated pixels learn nothing through the clip
    # the stable BCE still pushes them: gradient p - t
    zs = z.detach().clone().requires_grad_(True)
    apply(BCE(), zs, t).sum().backward()
    torch.testing.assert_close(zs.grad, torch.tensor([[0.5, 0.0, -0.5]]))
    with pytest.raises(ConfigError, match="loss.eps"):
        ClampedProbabilityBCE(eps=0.5)


@pytest.mark.parametrize(
    "cls",
    [BCE, BCEExcess, ContinuousBernoulli, NaivePositiveCrossEntropy, DoubleSigmoidBCE,
     ClampedProbabilityBCE],
)
def test_cross_entropy_family_declares_unit_targets_and_a_sigmoid_output(cls):
    assert cls.target_range == UNIT and cls.output_activation == "sigmoid"


def test_the_module_shows_the_continuous_bernoulli_mean(make_config):
    from aelab.training.build import build

    cfg = make_config("data=synthetic", "data.train_size=64", "data.val_size=16",
                      "data.test_size=16", "data.batch_size=16", "loss=continuous_bernoulli")
    parts = build(cfg)
    x = parts.data.probe(4)
    with torch.no_grad():
        logits = parts.net(x)
        torch.testing.assert_close(parts.module.reconstruct(x, normalized=True), cb_mean(logits))
    assert not torch.allclose(cb_mean(logits), torch.sigmoid(logits))



# --- the remaining 2017 mistakes (H9-H11) ----------------------------------------------------


def test_softmax_pixel_cross_entropy_is_the_classifier_loss_over_pixels():
    z = torch.tensor([[0.0, 1.0, 2.0, -1.0], [3.0, 0.0, 0.0, 0.0]], dtype=torch.float64)
    x = torch.tensor([[0.0, 0.5, 1.0, 0.2], [1.0, 0.0, 0.0, 0.0]], dtype=torch.float64)
    got = apply(SoftmaxPixelCrossEntropy(), z, x)
    share = z.exp() / z.exp().sum(1, keepdim=True)  # softmax over the pixels of each image
    torch.testing.assert_close(got, -x * share.log())
    # tf.nn.softmax_cross_entropy_with_logits(labels=x, logits=z) is the per-image sum
    torch.testing.assert_close(got.sum(1), -(x * torch.log_softmax(z, 1)).sum(1))
    assert got[1].sum().item() == pytest.approx(-3 + math.log(math.exp(3) + 3))
    # blind to the output's brightness: a constant added to every logit changes nothing
    torch.testing.assert_close(apply(SoftmaxPixelCrossEntropy(), z + 5, x), got)


def test_swapped_logits_bce_uses_the_prediction_as_label_and_the_input_as_logits():
    z = torch.tensor([[0.0, 2.0, -1.0, 4.0]], dtype=torch.float64, requires_grad=True)
    x = torch.tensor([[0.0, 1.0, 0.3, 0.8]], dtype=torch.float64)
    got = apply(SwappedLogitsBCE(), z, x)
    p, s = torch.sigmoid(z), torch.sigmoid(x)
    torch.testing.assert_close(got, -(p * s.log() + (1 - p) * (1 - s).log()))
    assert got[0, 0].item() == pytest.approx(math.log(2))  # x = 0: log 2 whatever p
    # its gradient in p is -x: white where there is ink, no push at all where x = 0
    p_leaf = p.detach().clone().requires_grad_(True)
    SwappedLogitsBCE().per_pixel(None, p_leaf, x).sum().backward()
    torch.testing.assert_close(p_leaf.grad, -x)


def test_swapped_probability_bce_clips_the_input_and_binarises_the_prediction():
    x = torch.tensor([[0.0, 1.0, 0.25, 0.75]])
    p = torch.tensor([[0.5, 0.5, 0.1, 0.9]], requires_grad=True)
    loss = SwappedProbabilityBCE(eps=1e-7)
    got = loss.per_pixel(None, p, x)
    xc = x.clamp(1e-7, 1 - 1e-7)
    torch.testing.assert_close(got, -(p * xc.log() + (1 - p) * (1 - xc).log()))
    assert got[0, 2].item() == pytest.approx(-(0.1 * math.log(0.25) + 0.9 * math.log(0.75)))
    got.sum().backward()
    # gradient in p: -logit(x'), so pixels below 1/2 go to 0, those above to 1
    torch.testing.assert_close(p.grad, -(xc / (1 - xc)).log())
    assert p.grad[0, 2] > 0 > p.grad[0, 3]
    raw = SwappedProbabilityBCE(eps=0.0).per_pixel(None, p.detach(), x)
    assert math.isinf(raw[0, 0].item()) and math.isinf(raw[0, 1].item())
    with pytest.raises(ConfigError, match="loss.eps"):
        SwappedProbabilityBCE(eps=0.5)


def test_unclamped_probability_bce_is_the_raw_formula_with_inf_and_nan_at_exact_bounds():
    z = torch.tensor([[0.0, 2.0, 20.0, 20.0, -120.0]])  # float32: p = 1, 1, 0 at the end
    x = torch.tensor([[0.5, 0.9, 0.5, 1.0, 0.5]])
    got = apply(UnclampedProbabilityBCE(), z, x)
    p = torch.sigmoid(z)
    torch.testing.assert_close(got[:, :2], -(x * p.log() + (1 - x) * (1 - p).log())[:, :2])
    assert math.isinf(got[0, 2].item()) and math.isnan(got[0, 3].item())
    assert math.isinf(got[0, 4].item())
    torch.testing.assert_close(got, apply(ClampedProbabilityBCE(eps=0.0), z, x), equal_nan=True)


@pytest.mark.parametrize(
    "cls", [SoftmaxPixelCrossEntropy, SwappedLogitsBCE, SwappedProbabilityBCE,
            UnclampedProbabilityBCE],
)
def test_the_2017_mistakes_h9_h11_declare_unit_targets_and_a_sigmoid_output(cls):
    assert cls.target_range == UNIT and cls.output_activation == "sigmoid"


@pytest.mark.parametrize("reduction", ["mean", "image_sum", "batch_sum"])
def test_reduce_on_a_model_axis_is_each_models_reduction(reduction):
    from aelab.losses import reduce

    per_pixel = torch.rand(3, 4, 5, generator=torch.Generator().manual_seed(0))
    each = torch.stack([reduce(p, reduction) for p in per_pixel])
    torch.testing.assert_close(reduce(per_pixel, reduction, model_axis=True), each)
    if reduction == "image_sum":  # by hand: model 1's images summed, over 4 images
        assert float(reduce(per_pixel, reduction, True)[1]) == pytest.approx(
            float(per_pixel[1].sum()) / 4)


def test_rows_alone_tells_a_per_image_loss_from_one_with_batch_statistics():
    """A stacked MLP group calls a shared loss once on all slots' rows only when the loss
    scores each image alone (aelab.stacked.net.rows_alone)."""
    from aelab.losses import MSE
    from aelab.losses.reconstruction import ReconstructionLoss
    from aelab.stacked.net import rows_alone

    class BatchCentred(ReconstructionLoss):  # subtracts the batch mean: rows depend on each other
        def per_pixel(self, logits, recon, target):
            return (recon - target - (recon - target).mean(0)).square()

    assert rows_alone(MSE(), 784)
    assert not rows_alone(BatchCentred(), 784)
