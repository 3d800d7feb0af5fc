"""The study's knobs: initialisations, loss reductions, the coupled L2 penalty, H8's opt-in."""

import math

import pytest
import torch
from hydra.utils import instantiate
from torch import nn

from aelab.config.validate import check_compatible
from aelab.data.normalization import Standard, Unit
from aelab.errors import ConfigError
from aelab.losses import BCE, MSE
from aelab.models import EncoderDecoder, init_normal, mlp_autoencoder
from aelab.training.build import build
from aelab.training.module import Autoencoder
from aelab.training.run import run

from conftest import TINY

SEED_WIDTHS = [(784, 100), (100, 50), (50, 100), (100, 784)]  # (fan_in, fan_out) per layer


def seed_net(init_overrides, make_config) -> EncoderDecoder:
    """The seed network initialised through the composed `init` group."""
    torch.manual_seed(0)
    net = mlp_autoencoder((1, 28, 28), [100, 50], nn.Sigmoid, "sigmoid")
    instantiate(make_config(*init_overrides).init)(net)
    return net


def layers(net):
    assert [(m.in_features, m.out_features) for m in net.weight_layers()] == SEED_WIDTHS
    return list(net.weight_layers())


# --- initialisation ---------------------------------------------------------------------------


def test_init_default_keeps_pytorch_uniform_weights_and_biases(make_config):
    for lin in layers(seed_net(["init=default"], make_config)):
        bound = 1 / math.sqrt(lin.in_features)
        assert lin.weight.abs().max() <= bound and lin.bias.abs().max() <= bound
        assert lin.weight.std().item() == pytest.approx(bound / math.sqrt(3), rel=0.1)
        assert lin.bias.abs().sum() > 0


def test_init_xavier_has_glorot_std_and_zero_biases(make_config):
    for gain in (1.0, 2.0):
        for lin in layers(seed_net(["init=xavier", f"init.gain={gain}"], make_config)):
            std = gain * math.sqrt(2 / (lin.in_features + lin.out_features))
            assert lin.weight.std().item() == pytest.approx(std, rel=0.05)
            assert lin.weight.abs().max() <= std * math.sqrt(3) + 1e-6  # uniform
            assert lin.bias.eq(0).all()


def test_init_kaiming_has_he_std_and_zero_biases(make_config):
    for lin in layers(seed_net(["init=kaiming"], make_config)):
        assert lin.weight.std().item() == pytest.approx(math.sqrt(2 / lin.in_features), rel=0.05)
        assert lin.bias.eq(0).all()


def test_init_normal_draws_weights_and_biases_like_tf_random_normal(make_config):
    net = seed_net(["init=normal"], make_config)  # conf/init/normal.yaml: std 1, biases too
    weights = torch.cat([lin.weight.flatten() for lin in layers(net)])
    biases = torch.cat([lin.bias for lin in net.weight_layers()])
    assert weights.std().item() == pytest.approx(1.0, rel=0.01)
    assert weights.mean().item() == pytest.approx(0.0, abs=0.01)
    assert biases.std().item() == pytest.approx(1.0, rel=0.05)  # 1034 biases


def test_init_normal_std_and_bias_options(make_config):
    net = seed_net(["init=normal", "init.std=0.05", "init.bias=false"], make_config)
    for lin in layers(net):
        assert lin.weight.std().item() == pytest.approx(0.05, rel=0.05)
        assert lin.bias.eq(0).all()
    with pytest.raises(ConfigError, match="init.std=0"):
        init_normal(net, std=0.0)


def test_init_normal_std_one_saturates_the_seed_network_at_step_zero(make_config):
    net = seed_net(["init=normal"], make_config)
    x = (torch.rand(256, 784) < 0.13).float()  # MNIST-like: ~13% ink
    pre, _ = net.trace(x)
    assert (pre[0].abs() > 4.6).float().mean() > 0.5  # most first-layer sigmoids in the tails


# --- loss reduction ---------------------------------------------------------------------------


def module_with(loss, l2_penalty: float = 0.0, seed: int = 0) -> Autoencoder:
    torch.manual_seed(seed)
    net = mlp_autoencoder((1, 28, 28), [100, 50], nn.Sigmoid, "sigmoid")
    return Autoencoder(net, loss, torch.optim.SGD, Unit(), l2_penalty).double()


def step(module: Autoencoder, batch: torch.Tensor):
    """One step's (objective, logged train/loss, weight and bias gradients)."""
    module.zero_grad()
    objective, logged = module.objective(batch.to(module.dtype))
    objective.backward()
    grads = [p.grad.clone() for p in module.net.parameters()]
    return objective.detach(), logged, grads


@pytest.mark.parametrize("loss_cls", [MSE, BCE])
def test_reduction_scales_the_gradient_and_leaves_the_logged_loss_per_pixel(loss_cls):
    batch = torch.rand(8, 784)
    results = {r: step(module_with(loss_cls(reduction=r)), batch) for r in
               ("mean", "image_sum", "batch_sum")}
    scale = {"mean": 1, "image_sum": 784, "batch_sum": 8 * 784}
    mean_obj, mean_logged, mean_grads = results["mean"]
    for reduction, (objective, logged, grads) in results.items():
        torch.testing.assert_close(objective, mean_obj * scale[reduction])
        torch.testing.assert_close(logged, mean_logged)  # per-pixel mean whatever the reduction
        for g, g_mean in zip(grads, mean_grads):
            torch.testing.assert_close(g, g_mean * scale[reduction])
    assert mean_logged.item() == pytest.approx(mean_obj.item())


def test_reduction_is_a_config_option(make_config):
    for reduction in ("mean", "image_sum", "batch_sum"):
        cfg = make_config(*TINY, "loss=bce", f"loss.reduction={reduction}")
        assert instantiate(cfg.loss).reduction == reduction


def test_logged_train_loss_is_comparable_across_reductions_in_real_runs(make_config):
    """One SGD step on the same batch: train/loss (logged before the update) is identical."""
    logged = []
    for reduction in ("mean", "batch_sum"):
        cfg = make_config(*TINY, "loss=mse", f"loss.reduction={reduction}", "optimizer=sgd",
                          "logger=none", "+trainer.max_steps=1", "threads=1", name=reduction)
        logged.append(run(cfg)["history"]["train/loss"][0])
    assert logged[0] == pytest.approx(logged[1], rel=1e-6)


# --- coupled L2 penalty (H7) ------------------------------------------------------------------


def test_l2_penalty_adds_lambda_sum_squared_weights_with_gradient_two_lambda_w():
    lam, batch = 0.01, torch.rand(8, 784)
    obj0, logged0, grads0 = step(module_with(BCE(), 0.0), batch)
    module = module_with(BCE(), lam)
    obj, logged, grads = step(module, batch)
    weights = [lin.weight for lin in module.net.weight_layers()]
    expected_penalty = lam * sum(w.detach().square().sum() for w in weights)
    torch.testing.assert_close(obj, obj0 + expected_penalty)
    torch.testing.assert_close(logged, logged0)  # the logged loss is the data term only
    named = [name for name, _ in module.net.named_parameters()]
    for name, g, g0, p in zip(named, grads, grads0, module.net.parameters()):
        extra = 2 * lam * p.detach() if name.endswith("weight") else torch.zeros_like(p)
        torch.testing.assert_close(g - g0, extra)


def test_l2_penalty_is_coupled_not_the_optimizers_weight_decay(make_config):
    cfg = make_config(*TINY, "l2_penalty=0.001", "optimizer=adam")
    parts = build(cfg)
    assert parts.module.l2_penalty == 0.001
    optimizer = parts.module.configure_optimizers()
    assert all(group["weight_decay"] == 0 for group in optimizer.param_groups)
    # with Adam, a coupled penalty passes through the adaptive scaling, so its update
    # differs from decoupled decay (AdamW) with the same coefficient
    coupled, decoupled = nn.Parameter(torch.ones(3)), nn.Parameter(torch.ones(3))
    opt_c = torch.optim.Adam([coupled], lr=0.1)
    opt_d = torch.optim.AdamW([decoupled], lr=0.1, weight_decay=0.001)
    (0.001 * coupled.square().sum()).backward()
    decoupled.grad = torch.zeros(3)
    opt_c.step()
    opt_d.step()
    assert coupled.detach()[0].item() == pytest.approx(0.9, abs=1e-4)  # Adam: a full lr step
    assert decoupled.detach()[0].item() == pytest.approx(1 - 0.1 * 0.001)  # decay: lr * wd * w


@pytest.mark.parametrize(
    ("experiment", "shrink", "optimizer", "l2", "decay"),
    [("seed_h7", "none", torch.optim.Adam, 1e-3, 0.0),  # none keeps the experiment's penalty
     ("seed_h7", "l2_3e-5", torch.optim.Adam, 3e-5, 0.0),  # replaces it
     ("seed_h3", "decay_5e-4", torch.optim.SGD, 0.0, 5e-4),  # the experiment's own optimiser
     ("seed_h8", "decay_1e-4", torch.optim.Adam, 0.0, 1e-4)],
)
def test_shrink_adds_its_penalty_after_the_experiment(make_config, experiment, shrink, optimizer,
                                                      l2, decay):
    parts = build(make_config(*TINY, f"experiment={experiment}", f"shrink={shrink}"))
    assert parts.module.l2_penalty == l2
    built = parts.module.configure_optimizers()
    assert type(built) is optimizer
    assert all(group["weight_decay"] == decay for group in built.param_groups)


def test_optimizer_weight_decay_is_torchs_coupled_decay(make_config):
    """weight_decay adds wd * w to every parameter's gradient (biases too): with SGD, one step
    on a zero data gradient scales every parameter by 1 - lr * wd."""
    parts = build(make_config(*TINY, "optimizer=sgd", "optimizer.lr=0.1",
                              "optimizer.weight_decay=0.5"))
    net = parts.module.net
    before = [p.detach().clone() for p in net.parameters()]
    optimizer = parts.module.configure_optimizers()
    for p in net.parameters():
        p.grad = torch.zeros_like(p)
    optimizer.step()
    for p, old in zip(net.parameters(), before):
        torch.testing.assert_close(p.detach(), old * (1 - 0.1 * 0.5))


def test_negative_l2_penalty_is_refused(make_config):
    with pytest.raises(ConfigError, match="l2_penalty=-0.1 must be"):
        run(make_config(*TINY, "l2_penalty=-0.1", "logger=none"))


# --- H8: standardised targets with BCE --------------------------------------------------------


def test_bce_on_standardised_targets_is_refused_by_default(make_config):
    with pytest.raises(ConfigError, match="allow_out_of_range_targets=true runs it anyway"):
        run(make_config(*TINY, "loss=bce", "normalization=standard", "logger=none"))
    with pytest.raises(ConfigError, match="cannot reach the targets"):
        check_compatible(MSE(), Standard(), "sigmoid")


@pytest.mark.parametrize("output", ["auto", "sigmoid"])
def test_bce_on_standardised_targets_runs_when_allowed(make_config, output):
    cfg = make_config(*TINY, "loss=bce", "normalization=standard",
                      "allow_out_of_range_targets=true", f"model.output_activation={output}",
                      "logger=none", "+trainer.max_steps=2", "threads=1")
    parts = build(cfg)
    assert isinstance(parts.net.output_activation, nn.Sigmoid)  # auto: the loss's sigmoid
    train = parts.data.splits["train"]
    assert train.min() < 0 and train.max() > 1  # the targets really leave [0, 1]
    result = run(cfg)
    assert result["status"] == "completed" and math.isfinite(result["test"]["mse"])
    check_compatible(MSE(), Standard(), "sigmoid", allow_out_of_range=True)  # no error
