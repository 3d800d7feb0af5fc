"""aelab's training path (tensors in memory, index-slice batches, `steps_per_call` optimiser
steps per Lightning batch, a running-sum training loss, Lightning around it) gives exactly the
numbers of a plain PyTorch loop, for the same seed on CPU, whatever `steps_per_call`;
and training on the CPU skips Lightning's per-call NVML check."""

from __future__ import annotations

import os
from pathlib import Path

import lightning as L
import pytest
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig

from aelab.training.build import build
from aelab.training.run import NVML_CHECK, run

from conftest import TINY

EPOCHS = 3


def plain_loop(cfg: DictConfig) -> tuple[list[float], dict[str, torch.Tensor]]:
    """The straightforward path: the same objects, a hand-written loop, no Lightning Trainer.
    Returns the per-epoch mean training loss and the final weights."""
    L.seed_everything(cfg.seed, verbose=False)  # as aelab.training.run.run does before building
    parts = build(cfg)
    module, train, batch_size = parts.module, parts.data.splits["train"], cfg.data.batch_size
    optimizer = instantiate(cfg.optimizer)(module.parameters())
    history = []
    for epoch in range(EPOCHS):
        g = torch.Generator().manual_seed(cfg.seed * 100_003 + epoch)
        order = torch.randperm(len(train), generator=g)
        total, seen = torch.zeros(()), 0
        for start in range(0, len(train), batch_size):
            x = train[order[start : start + batch_size]]
            if parts.data.stochastic:
                x = parts.normalization.sample(x, g)
            objective, loss = module.objective(x)
            optimizer.zero_grad()
            objective.backward()
            optimizer.step()
            total += loss * len(x)
            seen += len(x)
        history.append(float(total / seen))
    return history, {k: v.detach().clone() for k, v in module.state_dict().items()}


@pytest.mark.parametrize("steps_per_call", [1, 3, 10])
@pytest.mark.parametrize(
    "setting",
    [
        ["optimizer=adam", "loss=mse"],
        ["optimizer=sgd", "optimizer.momentum=0.9", "l2_penalty=0.001", "loss=bce"],
        ["optimizer=rmsprop", "normalization=stochastic_binary", "loss=bce"],
        ["model=conv", "model.channels=[4,8]", "activation=relu", "loss=bce", "l2_penalty=0.001"],
    ],
)
def test_aelab_gives_the_loss_curve_and_weights_of_a_plain_loop(make_config, setting,
                                                                 steps_per_call):
    """4 steps per epoch: in Lightning batches of 1, of 3 + 1, and of 4 (the default 10)."""
    cfg = make_config(*TINY, "logger=none", f"trainer.max_epochs={EPOCHS}",
                      f"steps_per_call={steps_per_call}", *setting)
    result = run(cfg)
    history, weights = plain_loop(cfg)
    assert result["status"] == "completed"
    assert result["history"]["train/loss"] == history  # bit-identical floats, every epoch
    saved = torch.load(Path(cfg.paths.output_dir) / "last.ckpt", weights_only=True)
    assert saved["state_dict"].keys() == weights.keys()
    assert all(torch.equal(saved["state_dict"][k], w) for k, w in weights.items())


class NvmlCheckProbe(L.Callback):
    """Records PYTORCH_NVML_BASED_CUDA_CHECK as the training steps see it."""

    seen: list[str | None] = []

    def on_train_batch_start(self, *args) -> None:
        NvmlCheckProbe.seen.append(os.environ.get(NVML_CHECK))


def test_cpu_training_uses_the_plain_cuda_check_and_restores_lightnings(make_config):
    assert os.environ.get(NVML_CHECK) == "1"  # set by `import lightning`
    NvmlCheckProbe.seen.clear()
    probe = ["+callbacks.probe._target_=test_fast_path.NvmlCheckProbe"]
    assert run(make_config(*TINY, "logger=none", *probe))["status"] == "completed"
    assert NvmlCheckProbe.seen and set(NvmlCheckProbe.seen) == {"0"}
    assert os.environ.get(NVML_CHECK) == "1"


class BackwardProbe(L.Callback):
    """Records whether the module took the plain backward path (it listens to no backward
    hook itself)."""

    plain: list[bool] = []

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        BackwardProbe.plain.append(pl_module._plain_backward)


class BackwardCounter(L.Callback):
    """Listens to both backward hooks: every backward pass must reach it."""

    calls: list[str] = []

    def on_before_backward(self, trainer, pl_module, loss) -> None:
        BackwardCounter.calls.append("before")

    def on_after_backward(self, trainer, pl_module) -> None:
        BackwardCounter.calls.append("after")


@pytest.mark.parametrize("extra, plain", [
    ([], True),
    (["+callbacks.counter._target_=test_fast_path.BackwardCounter"], False),
    (["+trainer.precision=bf16-mixed"], False),
])
def test_backward_skips_lightnings_hooks_only_where_nothing_listens(make_config, extra, plain):
    """loss.backward() stands in for manual_backward only when no callback listens to a
    backward hook and the precision is full (aelab.training.backward); a listener hears
    every one of the 2 epochs x 4 steps."""
    BackwardProbe.plain.clear()
    BackwardCounter.calls.clear()
    cfg = make_config(*TINY, "logger=none", "trainer.max_epochs=2",
                      "+callbacks.probe._target_=test_fast_path.BackwardProbe", *extra)
    assert run(cfg)["status"] == "completed"
    assert BackwardProbe.plain == [plain, plain]
    if extra and "counter" in extra[0]:
        assert BackwardCounter.calls == ["before", "after"] * 8
