"""The fast training path (manual optimisation, multi-tensor optimiser updates) gives exactly
the numbers of the straightforward one (Lightning's automatic loop, torch's per-tensor
optimiser updates), for the same seed on CPU."""

from __future__ import annotations

import os

import lightning as L
import pytest
import torch
from hydra.utils import instantiate
from torch import nn

from aelab.build import build
from aelab.nets import MLPAutoencoder
from aelab.train import NVML_CHECK, run

from conftest import TINY

STRAIGHTFORWARD = ["optimization=automatic", "optimizer.foreach=false"]


@pytest.mark.parametrize(
    "setting",
    [
        ["optimizer=adam"],
        ["optimizer=sgd", "optimizer.momentum=0.9", "l2_penalty=0.001", "loss=bce"],
        ["optimizer=rmsprop", "normalization=stochastic_binary", "loss=bce"],
    ],
)
def test_fast_and_straightforward_paths_give_the_same_loss_curve(make_config, setting):
    overrides = [*TINY, "logger=none", "trainer.max_epochs=3", *setting]
    fast = run(make_config(*overrides, name="fast"))
    plain = run(make_config(*overrides, *STRAIGHTFORWARD, name="plain"))
    assert fast["status"] == plain["status"] == "completed"
    assert len(fast["history"]["train/loss"]) == 3
    assert fast["history"] == plain["history"]  # bit-identical floats, every epoch
    assert fast["test"] == plain["test"]


@pytest.mark.parametrize("name", ["adam", "sgd", "rmsprop", "adadelta"])
def test_foreach_updates_equal_the_per_tensor_loop(make_config, name):
    """Each optimiser of conf/optimizer, 5 steps of the seed network: the same weights."""
    weights = {}
    for foreach in (True, False):
        cfg = make_config(*TINY, f"optimizer={name}", f"optimizer.foreach={foreach}")
        assert cfg.optimizer.foreach is foreach
        torch.manual_seed(0)
        net = MLPAutoencoder(784, [100, 50], nn.Sigmoid, "sigmoid")
        optimizer = instantiate(cfg.optimizer)(net.parameters())
        x = torch.rand(5, 32, 784, generator=torch.Generator().manual_seed(1))
        for batch in x:
            loss = (torch.sigmoid(net(batch)) - batch).square().mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        weights[foreach] = [p.detach().clone() for p in net.parameters()]
    assert all(torch.equal(a, b) for a, b in zip(weights[True], weights[False]))


def test_manual_optimization_is_the_default(make_config):
    assert not build(make_config(*TINY)).module.automatic_optimization
    assert build(make_config(*TINY, "optimization=automatic")).module.automatic_optimization


def test_gradient_clipping_falls_back_to_lightnings_automatic_loop(make_config, caplog):
    """Lightning clips gradients only in its automatic loop: the run uses it, says so, trains."""
    cfg = make_config(*TINY, "logger=none", "+trainer.gradient_clip_val=0.01")
    with caplog.at_level("INFO", logger="aelab.build"):
        assert build(cfg).module.automatic_optimization
    assert "trainer.gradient_clip_val is set: using Lightning's automatic" in caplog.text
    result = run(cfg)
    assert result["status"] == "completed"
    unclipped = run(make_config(*TINY, "logger=none", name="unclipped"))
    assert result["history"]["train/loss"] != unclipped["history"]["train/loss"]


class NvmlCheckProbe(L.Callback):
    """Records PYTORCH_NVML_BASED_CUDA_CHECK as the training steps see it."""

    seen: list[str | None] = []

    def on_train_batch_start(self, *args) -> None:
        NvmlCheckProbe.seen.append(os.environ.get(NVML_CHECK))


def test_cpu_training_uses_the_plain_cuda_check_and_restores_lightnings(make_config):
    import lightning  # noqa: F401  (sets the variable to "1", as in every run)

    assert os.environ.get(NVML_CHECK) == "1"
    NvmlCheckProbe.seen.clear()
    probe = ["+callbacks.probe._target_=test_fast_path.NvmlCheckProbe"]
    assert run(make_config(*TINY, "logger=none", *probe))["status"] == "completed"
    assert NvmlCheckProbe.seen and set(NvmlCheckProbe.seen) == {"0"}
    assert os.environ.get(NVML_CHECK) == "1"
