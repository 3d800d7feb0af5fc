"""Every `experiment=seed_*` composes to the seed network plus its cause, shows that cause's
own signature on one batch, and trains a batch; every `pair_*` arm is its base plus a loss."""

import math
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf
from torch import nn

from aelab.__main__ import CONFIG_DIR
from aelab.diagnostics import metrics as dg
from aelab.training.build import build
from aelab.training.run import run

from conftest import TINY

EXPERIMENT_DIR = Path(CONFIG_DIR) / "experiment"
EXPERIMENTS = sorted(p.stem for p in EXPERIMENT_DIR.glob("seed_*.yaml"))
# experiments whose cause is a loss variant: it is their cross-entropy arm, compared with mse
LOSS_VARIANTS = {
    "seed_h4": "bce_naive_positive",
    "seed_h5": "bce_double_sigmoid",
    "seed_h6": "bce_clamped_probs",
    "seed_h9": "softmax_pixels",
    "seed_h10": "bce_swapped_logits",
    "seed_h11": "bce_unclamped_probs",
}

# the seed network as described: what every experiment has unless its cause changes it
SEED = {
    "model.hidden": [100, 50],
    "model.output_activation": "auto",
    "activation._target_": "torch.nn.Sigmoid",
    "normalization._target_": "aelab.data.normalization.Unit",
    "init._target_": "aelab.models.init_default",
    "optimizer._target_": "torch.optim.Adam",
    "optimizer.lr": 1e-3,
    "loss._target_": "aelab.losses.MSE",  # the loss is left to the command line
    "loss.reduction": "mean",
    "l2_penalty": 0.0,
    "allow_out_of_range_targets": False,
}
SGD_001 = {"optimizer._target_": "torch.optim.SGD", "optimizer.lr": 0.01, "optimizer.momentum": 0}
CAUSES = {
    "seed_baseline": {},
    "seed_h1": {"init._target_": "aelab.models.init_normal", "init.std": 1.0, "init.bias": True},
    "seed_h2": {**SGD_001, "loss.reduction": "mean"},
    "seed_h3": {**SGD_001, "loss.reduction": "batch_sum"},
    "seed_h4": {"loss._target_": "aelab.losses.NaivePositiveCrossEntropy", "loss.eps": 1e-10},
    "seed_h5": {"loss._target_": "aelab.losses.DoubleSigmoidBCE"},
    "seed_h6": {"loss._target_": "aelab.losses.ClampedProbabilityBCE", "loss.eps": 1e-7},
    "seed_h7": {"l2_penalty": 1e-3},
    "seed_h9": {"loss._target_": "aelab.losses.SoftmaxPixelCrossEntropy"},
    "seed_h10": {"loss._target_": "aelab.losses.SwappedLogitsBCE"},
    "seed_h11": {"loss._target_": "aelab.losses.UnclampedProbabilityBCE"},
    "seed_h8": {
        "normalization._target_": "aelab.data.normalization.Standard",
        "model.output_activation": "sigmoid",
        "allow_out_of_range_targets": True,
    },
    "seed_tutorial": {
        "init._target_": "aelab.models.init_normal", "init.std": 1.0, "init.bias": True,
        "optimizer._target_": "torch.optim.RMSprop", "optimizer.lr": 0.01,
    },
}


def arms(name: str) -> list[str | None]:
    """The loss overrides the study runs for an experiment: bce vs mse, or the variant vs mse."""
    return [None, "loss=mse"] if name in LOSS_VARIANTS else ["loss=bce", "loss=mse"]


def test_there_is_an_experiment_per_cause():
    assert sorted(CAUSES) == EXPERIMENTS, "add the new experiment's intended values to CAUSES"


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_experiment_is_global_and_composes_to_its_intended_values(make_config, name):
    assert (EXPERIMENT_DIR / f"{name}.yaml").read_text().startswith("# @package _global_\n")
    cfg = make_config(f"experiment={name}")
    for key, expected in {**SEED, **CAUSES[name]}.items():
        value = OmegaConf.select(cfg, key)
        value = OmegaConf.to_object(value) if OmegaConf.is_config(value) else value
        assert value == expected, f"{name}: {key}={value!r}, expected {expected!r}"


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_experiment_builds_the_all_sigmoid_seed_network(make_config, name):
    parts = build(make_config(*TINY, f"experiment={name}"))
    linears = parts.net.weight_layers()
    widths = [linears[0].in_features] + [lin.out_features for lin in linears]
    assert widths == [784, 100, 50, 100, 784]
    assert all(isinstance(a, nn.Sigmoid) for a in parts.net.activations()[:-1])
    assert isinstance(parts.net.output_activation, nn.Sigmoid)


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_command_line_loss_replaces_the_experiments_loss_and_keeps_its_cause(make_config, name):
    for loss, target, own in (("bce", "aelab.losses.BCE", set()),
                              ("mse", "aelab.losses.MSE", {"sigma"})):
        cfg = make_config(f"experiment={name}", f"loss={loss}")
        assert cfg.loss._target_ == target
        # no keys of another loss leak in
        assert set(cfg.loss) == {"_target_", "reduction"} | own
        assert cfg.loss.reduction == CAUSES[name].get("loss.reduction", "mean")
        for key, expected in CAUSES[name].items():
            if not key.startswith("loss."):
                assert OmegaConf.select(cfg, key) == expected


def _batch_and_logits(parts) -> tuple[torch.Tensor, torch.Tensor]:
    batch = next(iter(parts.data.train_dataloader()))[0]
    return batch, parts.net(batch)


def _loss(parts, logits: torch.Tensor, batch: torch.Tensor) -> torch.Tensor:
    """The per-pixel loss of the run's loss at these logits (its output activation applied)."""
    return parts.loss.per_pixel(logits, parts.net.output_activation(logits), batch)


def sign_h1(parts):  # N(0, 1) weights and biases: the hidden layers saturate at step 0
    pre, _ = parts.net.trace(next(iter(parts.data.train_dataloader()))[0])
    saturated = [dg.saturation_fraction(z).item() for z in pre[:-1]]
    assert min(saturated) > 0.3, saturated  # 0.35-0.48 here; PyTorch's default init: 0.0


def sign_h3(parts):  # the loss is summed over the batch and the pixels
    batch, logits = _batch_and_logits(parts)
    per_pixel = _loss(parts, logits, batch)
    torch.testing.assert_close(parts.loss.reduce(per_pixel), per_pixel.sum())


def sign_h4(parts):  # -t log p is lower for an all-white output than for the input itself
    batch, _ = _batch_and_logits(parts)
    at_input = parts.loss.per_pixel(None, batch.clamp(1e-6, 1), batch).mean()
    at_white = parts.loss.per_pixel(None, torch.ones_like(batch), batch).mean()
    assert at_white.item() == 0.0 < at_input.item()


def sign_h5(parts):  # the loss sees sigmoid(sigmoid(z)) in (0.5, 0.731): a floor above BCE's
    batch, logits = _batch_and_logits(parts)
    grid = torch.linspace(0, 1, 1001).view(-1, 1, 1)  # every output the sigmoid can give
    floor = torch.nn.functional.binary_cross_entropy_with_logits(
        grid.expand(-1, *batch.shape), batch.expand(1001, *batch.shape), reduction="none"
    ).amin(0).mean()
    assert floor.item() > 0.3  # log 2 on every background pixel
    assert _loss(parts, logits, batch).mean().item() >= floor.item()


def sign_h6(parts):  # probabilities clamped: a saturated pixel passes no gradient
    batch, _ = _batch_and_logits(parts)
    logits = torch.full_like(batch, 30.0, requires_grad=True)  # sigmoid rounds to 1 - eps
    _loss(parts, logits, batch).sum().backward()
    assert logits.grad.abs().max().item() == 0.0


def sign_h7(parts):  # the objective is the data term plus 1e-3 sum ||W||^2
    batch, _ = _batch_and_logits(parts)
    objective, data = parts.module.objective(batch)
    penalty = 1e-3 * sum(w.weight.square().sum() for w in parts.net.weight_layers())
    torch.testing.assert_close(objective - data, penalty)


def sign_h8(parts):  # standardised targets leave [0, 1]
    batch, _ = _batch_and_logits(parts)
    assert batch.min().item() < 0 and batch.max().item() > 1


def sign_h9(parts):  # softmax over the pixels: blind to a constant added to every logit
    batch, logits = _batch_and_logits(parts)
    torch.testing.assert_close(_loss(parts, logits + 3.0, batch), _loss(parts, logits, batch))


def sign_h10(parts):  # labels and logits swapped: d loss / d p = -x, whatever p
    batch, logits = _batch_and_logits(parts)
    recon = parts.net.output_activation(logits).detach().requires_grad_(True)
    parts.loss.per_pixel(logits, recon, batch).sum().backward()
    torch.testing.assert_close(recon.grad, -batch)


def sign_h11(parts):  # no clamp: an output that rounds to 1 on a 0 pixel costs inf
    batch, _ = _batch_and_logits(parts)
    logits = torch.full_like(batch, 30.0)
    assert torch.isinf(_loss(parts, logits, batch)[batch == 0]).all()


SIGNATURES = {"seed_h1": sign_h1, "seed_tutorial": sign_h1, "seed_h3": sign_h3,
              "seed_h4": sign_h4, "seed_h5": sign_h5, "seed_h6": sign_h6, "seed_h7": sign_h7,
              "seed_h8": sign_h8, "seed_h9": sign_h9, "seed_h10": sign_h10, "seed_h11": sign_h11}


@pytest.mark.parametrize("name", sorted(SIGNATURES))
def test_each_mistake_shows_its_own_signature(make_config, name):
    """The cause each experiment names, measured on its own built run (one batch)."""
    torch.manual_seed(0)
    SIGNATURES[name](build(make_config(*TINY, f"experiment={name}")))


def test_h2_moves_the_weights_a_hundredth_of_what_adam_does(make_config):
    """H2 (SGD 0.01 on a per-pixel mean loss): after 20 steps W1 has barely moved."""
    moved = {}
    for name in ("seed_h2", "seed_baseline"):
        cfg = make_config(*TINY, f"experiment={name}", "loss=mse", "logger=none",
                          "+trainer.max_steps=20", name=name)
        torch.manual_seed(0)
        parts = build(cfg)
        w0 = parts.net.weight_layers()[0].weight.detach().clone()
        optimizer = parts.module.configure_optimizers()
        optimizer = optimizer["optimizer"] if isinstance(optimizer, dict) else optimizer
        for batch in list(parts.data.train_dataloader())[:20]:
            loss, _ = parts.module.objective(batch[0])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        w = parts.net.weight_layers()[0].weight.detach()
        moved[name] = ((w - w0).norm() / w0.norm()).item()
    assert moved["seed_h2"] < 0.01 * moved["seed_baseline"], moved


@pytest.mark.parametrize(
    ("name", "loss"), [(name, loss) for name in EXPERIMENTS for loss in arms(name)],
    ids=lambda v: str(v).removeprefix("loss="),
)
def test_experiment_trains_one_batch(make_config, name, loss):
    overrides = [*TINY, f"experiment={name}", "logger=none", "+trainer.max_steps=1", "threads=1"]
    cfg = make_config(*overrides, *([loss] if loss else []))
    if loss is None:
        assert cfg.loss._target_.rsplit(".", 1)[1] != "MSE"  # the variant itself
    result = run(cfg)
    assert result["status"] == "completed"
    assert math.isfinite(result["history"]["train/loss"][0])
    assert math.isfinite(result["test"]["mse"])


PAIRS = {"pair_h8_bce": ("seed_h8", "BCE"), "pair_h8_mse": ("seed_h8", "MSE"),
         "pair_h4": ("seed_h4", "NaivePositiveCrossEntropy"),
         "pair_h5": ("seed_h5", "DoubleSigmoidBCE"), "pair_bce": ("seed_baseline", "BCE"),
         "pair_mse": ("seed_baseline", "MSE")}


def test_the_pair_arms_are_their_base_experiment_plus_a_loss(make_config):
    assert sorted(PAIRS) == sorted(p.stem for p in EXPERIMENT_DIR.glob("pair_*.yaml"))
    for name, (base, loss) in PAIRS.items():
        cfg = make_config(f"experiment={name}")
        assert cfg.loss._target_ == f"aelab.losses.{loss}"
        for key, expected in {**SEED, **CAUSES[base]}.items():
            if key.startswith("loss."):
                continue
            value = OmegaConf.select(cfg, key)
            value = OmegaConf.to_object(value) if OmegaConf.is_config(value) else value
            assert value == expected, f"{name}: {key}={value!r}, expected {expected!r}"
