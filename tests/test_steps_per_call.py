"""`steps_per_call` changes how often Lightning's hooks run, and nothing a run records: the
same metrics, the same TensorBoard steps, the same global step, max_steps honoured inside a
Lightning batch, a progress bar that counts optimiser steps, divergence found at its step."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from aelab.errors import Diverged
from aelab.training.callbacks import FiniteGuard, StepProgressBar
from aelab.training.run import run

from events import load_events

# 256 images in batches of 32: 8 optimiser steps per epoch
SMALL = [
    "data=synthetic", "data.train_size=256", "data.val_size=64", "data.test_size=64",
    "data.batch_size=32", "trainer.max_epochs=2", "trainer.enable_progress_bar=false",
    "trainer.log_every_n_steps=2", "threads=1", "callbacks.diagnostics.sample_every=1",
]


def checkpoint_step(folder: Path) -> int:
    return torch.load(folder / "last.ckpt", weights_only=True)["global_step"]


def scalars(folder: Path, tag: str) -> list[tuple[int, float]]:
    return [(e.step, e.value) for e in load_events(folder).Scalars(tag)]


def test_steps_per_call_leaves_metrics_events_and_steps_unchanged(make_config):
    runs = {}
    for k in (1, 3):  # batches of 1 step; of 3, 3 and 2 steps
        cfg = make_config(*SMALL, f"steps_per_call={k}", name=f"k{k}")
        runs[k] = (run(cfg), Path(cfg.paths.output_dir))
    (one, one_dir), (three, three_dir) = runs[1], runs[3]
    assert one["history"] == three["history"] and one["test"] == three["test"]
    # the diagnostics too, grads/* included: the optimizer hooks see every step either way
    assert one["diagnostics_history"] == three["diagnostics_history"]
    for folder in (one_dir, three_dir):
        assert checkpoint_step(folder) == 16
        # TensorBoard's x axis is the optimiser step
        assert [s for s, _ in scalars(folder, "train/loss_step")] == list(range(0, 16, 2))
        assert [s for s, _ in scalars(folder, "val/mse")] == [7, 15]
        assert [s for s, _ in scalars(folder, "train/loss")] == [7, 15]
    assert scalars(one_dir, "train/loss_step") == scalars(three_dir, "train/loss_step")
    # measured in both, each epoch (from other steps: see test_diagnostics for the sampling)
    assert len(one["diagnostics_history"]["grads/norm/W1"]) == 2
    assert len(three["diagnostics_history"]["grads/norm/W1"]) == 2


def test_max_steps_stops_inside_a_lightning_batch(make_config):
    cfg = make_config(*SMALL, "steps_per_call=10", "+trainer.max_steps=5")
    result = run(cfg)
    folder = Path(cfg.paths.output_dir)
    assert result["status"] == "completed" and checkpoint_step(folder) == 5
    assert len(result["history"]["train/loss"]) == 1  # the partial epoch's mean is logged
    assert [s for s, _ in scalars(folder, "train/loss_step")] == [0, 2, 4]


def test_finite_guard_names_the_first_non_finite_step_of_a_batch():
    guard = FiniteGuard(["lower optimizer.lr"])
    trainer = SimpleNamespace(global_step=40, current_epoch=3)
    guard.on_train_epoch_start(trainer, None)
    trainer.global_step = 50  # a Lightning batch of 10 steps, the 4th (global step 43) is NaN
    losses = torch.tensor([1.0, 2.0, 3.0, float("nan"), float("inf")] + [1.0] * 5)
    guard.on_train_batch_end(trainer, None, {"objectives": torch.ones(10)}, None, 0)  # finite
    with pytest.raises(Diverged) as err:
        guard.on_train_batch_end(trainer, None, {"objectives": losses}, None, 0)
    assert (err.value.epoch, err.value.step, err.value.global_step) == (3, 3, 43)
    assert "the training loss became nan in epoch 4, step 3 of the epoch (global step 43)" in str(
        err.value
    )
    assert "lower optimizer.lr" in str(err.value)


def test_progress_bar_counts_optimiser_steps(make_config, capsys):
    cfg = make_config(*SMALL, "steps_per_call=3", "trainer.enable_progress_bar=true",
                      "trainer.max_epochs=1", "callbacks.progress_bar.refresh_rate=4")
    bars = []

    class Probe(StepProgressBar):
        def on_train_batch_end(self, trainer, *args) -> None:
            super().on_train_batch_end(trainer, *args)
            bars.append((self.train_progress_bar.n, self.train_progress_bar.total))

    cfg.callbacks.progress_bar._target_ = f"{__name__}.Probe"
    globals()["Probe"] = Probe
    assert run(cfg)["status"] == "completed"
    # batches of 3, 3, 2 steps; the bar moves when a multiple of 4 is crossed, and at the end
    assert bars == [(0, 8), (6, 8), (8, 8)]
    assert "8/8" in capsys.readouterr().out  # (Lightning writes its bars to stdout)
