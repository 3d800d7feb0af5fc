"""The Trainer options a researcher reaches for work through aelab's manual-optimisation loop,
for every `steps_per_call`: gradient clipping, accumulation, learning-rate schedulers (each
equal to torch's own on the same steps, resumed exactly) and bf16 autocast; and the loop
uses no private Lightning state."""

from __future__ import annotations

import json
import math
import re
import subprocess
from pathlib import Path

import lightning as L
import pytest
import torch
from faults import faults_on_path  # noqa: F401 - autouse: subprocesses import faults
from test_fast_path import plain_loop
from torch.optim import lr_scheduler as sched

from aelab.errors import ConfigError
from aelab.training.build import build
from aelab.training.run import run

from conftest import REPO, compose_config
from events import load_events

# 256 images in batches of 32: 8 optimiser steps per epoch
SMALL = [
    "data=synthetic", "data.train_size=256", "data.val_size=64", "data.test_size=64",
    "data.batch_size=32", "trainer.max_epochs=3", "trainer.enable_progress_bar=false",
    "threads=1", "trainer.log_every_n_steps=1",
]


def recorded(cfg_overrides: list[str], folder: Path) -> tuple[dict, dict]:
    """Run with the StepRecorder; (metrics, the per-step gradient norms and lrs)."""
    probe = folder.parent / f"{folder.name}-steps.json"
    cfg = compose_config([*cfg_overrides, "+callbacks.probe._target_=gradient_probe.StepRecorder",
                          f"+callbacks.probe.path={probe}"], folder)
    return run(cfg), json.loads(probe.read_text())


def test_no_private_lightning_state_in_the_package():
    # Lightning's loop state, and the private helpers of its loggers (issue 25)
    private = r"_batches_that_stepped\|optim_step_progress\|_convert_params\|_flatten_dict"
    found = subprocess.run(["grep", "-rn", private + r"\|_sanitize_params",
                            str(REPO / "aelab")], capture_output=True, text=True)
    assert found.stdout == ""


@pytest.mark.parametrize("steps_per_call", [1, 10])
def test_gradient_clipping_clips_every_step(tmp_path, steps_per_call):
    # a summed BCE: gradient norms in the hundreds, so 0.5 clips every step
    setting = [*SMALL, "loss=bce", "loss.reduction=batch_sum", f"steps_per_call={steps_per_call}"]
    _, free = recorded(setting, tmp_path / "free")
    _, clipped = recorded([*setting, "trainer.gradient_clip_val=0.5"], tmp_path / "clipped")
    assert len(free["norms"]) == len(clipped["norms"]) == 24  # every step of 3 epochs
    assert min(free["norms"]) > 0.5
    assert clipped["norms"] == pytest.approx([0.5] * 24, rel=1e-5)

    # the first step's gradient, computed by hand from the same initial weights and batch
    cfg = compose_config(setting, tmp_path / "hand")
    L.seed_everything(cfg.seed, verbose=False)
    parts = build(cfg)
    g = torch.Generator().manual_seed(cfg.seed * 100_003)
    first = parts.data.splits["train"][torch.randperm(256, generator=g)[:32]]
    objective, _ = parts.module.objective(first)
    objective.backward()
    norm = torch.linalg.vector_norm(torch.stack(
        [p.grad.norm() for p in parts.module.parameters()]))
    assert free["norms"][0] == pytest.approx(float(norm), rel=1e-5)


def test_gradient_clipping_by_value(tmp_path):
    setting = [*SMALL, "loss=bce", "loss.reduction=batch_sum", "trainer.max_epochs=1",
               "trainer.gradient_clip_val=0.01", "trainer.gradient_clip_algorithm=value"]
    _, steps = recorded(setting, tmp_path / "run")
    # each of the P gradient entries is at most 0.01: the norm at most 0.01 sqrt(P)
    params = 784 * 100 + 100 + 100 * 50 + 50 + 50 * 100 + 100 + 100 * 784 + 784
    assert max(steps["norms"]) <= 0.01 * math.sqrt(params) + 1e-6


def accumulating_loop(cfg, accumulate: int, epochs: int):
    """A plain loop that steps once per `accumulate` batches (and at the epoch's end), the
    loss divided by `accumulate`, as Lightning accumulates under automatic optimisation."""
    from hydra.utils import instantiate

    L.seed_everything(cfg.seed, verbose=False)
    parts = build(cfg)
    module, train, batch_size = parts.module, parts.data.splits["train"], cfg.data.batch_size
    optimizer = instantiate(cfg.optimizer)(module.parameters())
    history, steps = [], 0
    for epoch in range(epochs):
        g = torch.Generator().manual_seed(cfg.seed * 100_003 + epoch)
        order = torch.randperm(len(train), generator=g)
        starts = list(range(0, len(train), batch_size))
        total, seen = torch.zeros(()), 0
        for i, start in enumerate(starts):
            x = train[order[start : start + batch_size]]
            objective, loss = module.objective(x)
            if i % accumulate == 0:
                optimizer.zero_grad()
            (objective / accumulate).backward()
            if (i + 1) % accumulate == 0 or i == len(starts) - 1:
                optimizer.step()
                steps += 1
            total += loss * len(x)
            seen += len(x)
        history.append(float(total / seen))
    return history, {k: v.detach().clone() for k, v in module.state_dict().items()}, steps


@pytest.mark.parametrize("steps_per_call", [1, 3])
def test_accumulation_matches_a_plain_accumulating_loop_bit_for_bit(tmp_path, steps_per_call):
    # 7 batches an epoch (224 images): accumulating 2 leaves one at the epoch's end
    setting = [*SMALL, "data.train_size=224", "trainer.accumulate_grad_batches=2",
               f"steps_per_call={steps_per_call}"]
    cfg = compose_config(setting, tmp_path / "run")
    result = run(cfg)
    aelab_weights = torch.load(tmp_path / "run" / "last.ckpt", weights_only=True)["state_dict"]
    history, weights, steps = accumulating_loop(compose_config(setting, tmp_path / "hand"), 2, 3)
    assert steps == 12
    assert torch.load(tmp_path / "run" / "last.ckpt", weights_only=True)["global_step"] == steps
    assert result["history"]["train/loss"] == history
    for key, value in weights.items():
        assert torch.equal(aelab_weights[key], value), key
    # and it is not the unaccumulated run
    plain_history, _ = plain_loop(compose_config([*SMALL, "data.train_size=224",
                                                  "trainer.max_epochs=3"], tmp_path / "p"))
    assert plain_history != history


def torch_lrs(name: str, steps: int, per_epoch: int, val_losses: list[float]) -> list[float]:
    """The lr before each of `steps` optimiser steps, from torch's scheduler alone."""
    optimizer = torch.optim.Adam([torch.zeros(1, requires_grad=True)], lr=1e-3)
    total_steps = steps
    schedulers = {
        "cosine": lambda: sched.CosineAnnealingLR(optimizer, T_max=total_steps),
        "step": lambda: sched.StepLR(optimizer, step_size=1, gamma=0.5),
        "warmup_cosine": lambda: sched.SequentialLR(
            optimizer, [sched.LinearLR(optimizer, start_factor=0.01, total_iters=5),
                        sched.CosineAnnealingLR(optimizer, T_max=total_steps - 5)],
            milestones=[5]),
        "plateau": lambda: sched.ReduceLROnPlateau(optimizer, factor=0.5, patience=0,
                                                   threshold=1e-4),
    }
    scheduler, lrs = schedulers[name](), []
    for s in range(steps):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        if name in ("cosine", "warmup_cosine"):
            scheduler.step()
        elif (s + 1) % per_epoch == 0:
            if name == "plateau":
                scheduler.step(val_losses[s // per_epoch])
            else:
                scheduler.step()
    return lrs


SCHEDULERS = {
    "cosine": ["scheduler=cosine"],
    "step": ["scheduler=step", "scheduler.step_size=1"],
    "warmup_cosine": ["scheduler=warmup_cosine", "scheduler.warmup=5"],
    # a tiny lr and threshold 1e-4 relative: val/loss barely moves, so the lr is halved
    "plateau": ["scheduler=plateau", "scheduler.patience=0", "optimizer.lr=1e-3"],
}


@pytest.mark.parametrize("steps_per_call", [1, 3])
@pytest.mark.parametrize("name", list(SCHEDULERS))
def test_scheduler_lr_curve_equals_torchs(tmp_path, name, steps_per_call):
    result, steps = recorded([*SMALL, *SCHEDULERS[name], f"steps_per_call={steps_per_call}"],
                             tmp_path / "run")
    expected = torch_lrs(name, 24, 8, result["history"]["val/loss"])
    assert steps["lrs"] == pytest.approx(expected, rel=1e-12, abs=0)
    if name != "plateau":
        assert len(set(expected)) > 2  # the schedule really moved the lr
    # logged: train/lr at every logged step on TensorBoard, and per epoch in metrics.json
    events = load_events(tmp_path / "run").Scalars("train/lr")
    assert [e.step for e in events] == list(range(24))
    assert [e.value for e in events] == pytest.approx(expected, rel=1e-6)
    assert len(result["history"]["train/lr"]) == 3


def test_plateau_halves_the_lr_when_val_loss_stalls(tmp_path):
    result, steps = recorded([*SMALL, *SCHEDULERS["plateau"], "scheduler.threshold=0.5"],
                             tmp_path / "run")
    # no epoch improves val/loss by half: each validation after the first halves the lr (the
    # history holds the lr each epoch trained with)
    assert result["history"]["train/lr"] == pytest.approx([1e-3, 1e-3, 5e-4], rel=1e-6)
    assert steps["lrs"][-1] == pytest.approx(5e-4)


@pytest.mark.parametrize("name", ["warmup_cosine", "plateau"])
def test_killed_and_resumed_run_with_a_scheduler_ends_as_an_uninterrupted_one(tmp_path, name):
    setting = [*SMALL, "trainer.max_epochs=4", *SCHEDULERS[name],
               "normalization=stochastic_binary"]
    reference = run(compose_config(setting, tmp_path / "ref"))
    term = ["+callbacks.term._target_=faults.Signal", "+callbacks.term.epoch=2"]
    with pytest.raises(SystemExit):
        run(compose_config([*setting, *term], tmp_path / "run"))
    resumed = run(compose_config([*setting, "resume=true"], tmp_path / "run"))
    assert resumed["resumed_from_epoch"] == 3  # killed in the third epoch (1-based)
    assert resumed["history"] == reference["history"]
    assert resumed["test"] == reference["test"]


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["scheduler=cosine", "+scheduler.gamma=0.5"],
         "scheduler=cosine takes eta_min, not gamma; remove scheduler.gamma."),
        (["scheduler=plateau", "scheduler.interval=step"], "(plateau: epoch, after each"),
        (["scheduler=warmup_cosine", "scheduler.warmup=1000"], "lower scheduler.warmup"),
    ],
)
def test_scheduler_settings_that_cannot_work_are_refused(tmp_path, overrides, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        run(compose_config([*SMALL, *overrides], tmp_path / "run"))


def test_bf16_autocast_trains_on_the_cpu(tmp_path):
    result = run(compose_config([*SMALL, "+trainer.precision=bf16-mixed"], tmp_path / "run"))
    assert result["status"] == "completed"
    assert all(math.isfinite(v) for v in result["history"]["train/loss"])
