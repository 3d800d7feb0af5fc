"""Every `experiment=seed_*` composes to the seed network plus its cause, and trains a batch."""

import math
from pathlib import Path

import pytest
from omegaconf import OmegaConf
from torch import nn

from aelab.__main__ import CONFIG_DIR
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
