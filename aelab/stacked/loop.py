"""The Lightning side of a stacked group: one LightningModule over the group's stacks
(aelab.stacked.net), trained by one real Lightning Trainer, and a CheckpointIO that writes
each run's `last.ckpt` where its own LastCheckpoint callback asks.

The group's runs share the data size, batch size, `steps_per_call`, epochs and every
trainer.* key the Trainer takes (aelab.stacked.plan), so the group's fit loop takes exactly
the calls, optimiser steps and validation batches that each single run's would; Lightning's
own loop state (epoch, global step, progress counters) is therefore each run's. Each run's
single-run module is a submodule (`runs`): Lightning moves it, with the stacks and before any
hook, to the device, and its callbacks see the real Trainer and that module (their run's
loggers, metrics and data in `module.run_state`, aelab.training.runstate).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Protocol

import lightning as L
import torch
from lightning.pytorch.plugins.io import CheckpointIO
from torch import nn

from aelab.data import TensorBatches
from aelab.stacked.net import Stack
from aelab.training.backward import backward_is_heard

log = logging.getLogger("aelab")


class GroupHooks(Protocol):
    """What StackedModule asks of its group (aelab.stacked.group.StackedGroup): each run's
    callbacks and records at every step, validation and epoch end. A protocol, so that this
    module does not import the group that imports it."""

    lrs: list[float]
    data_index: list[int]

    def start_training(self) -> None: ...
    def start_epoch(self) -> None: ...
    def log_step(self, losses: torch.Tensor, step: int) -> None: ...
    def sample_gradients(self, step: int, before: bool) -> None: ...
    def check_losses(self, objectives: torch.Tensor, steps: list[int]) -> None: ...
    def start_validation(self) -> None: ...
    def end_validation(self) -> None: ...
    def end_epoch(self, train: dict[str, torch.Tensor], count: int) -> None: ...
    def write_checkpoint(self, checkpoint: dict[str, Any], path: Path) -> None: ...


class StackedBatches:
    """One training batch per slot per step: a list, slot k's from its single run's own
    `TensorBatches` (its data set, its seed's order and samples)."""

    def __init__(self, batches: list[TensorBatches]) -> None:
        self.batches = batches

    def __len__(self) -> int:
        return len(self.batches[0])

    def __iter__(self) -> Iterator[list[torch.Tensor]]:
        iterators = [iter(b) for b in self.batches]
        for _ in range(len(self)):
            yield [next(it) for it in iterators]


class LrScale:
    """Each slot's own learning rate, under one optimiser built with the largest, `lrs[reference]`.

    Every torch optimiser aelab offers (Adam, SGD with momentum, RMSprop, Adadelta) moves a
    parameter by lr times an update whose state does not depend on lr, so slot k's step is the
    reference step times lrs[k] / lrs[reference]: `keep` the weights before the step, `apply`
    the scale after it. Nothing happens where every slot has the reference lr.
    """

    def __init__(self, stacks: Sequence[Stack], lrs: list[float], reference: int) -> None:
        top = lrs[reference]
        self.pairs: list[tuple[nn.Parameter, torch.Tensor]] = []
        for stack in stacks:
            scale = [lrs[k] / top if top else 1.0 for k in stack.members]
            if all(s == 1.0 for s in scale):
                continue
            for p in stack.params:
                self.pairs.append((p, torch.tensor(scale, device=p.device, dtype=p.dtype).view(
                    -1, *[1] * (p.dim() - 1))))
        self.before: list[torch.Tensor] = []

    @torch.no_grad()
    def keep(self) -> None:
        self.before = [p.detach().clone() for p, _ in self.pairs]

    @torch.no_grad()
    def apply(self) -> None:
        for (p, scale), old in zip(self.pairs, self.before):
            p.sub_(old).mul_(scale).add_(old)


class StackedModule(L.LightningModule):
    """The group's stacks under Lightning's manual optimisation: every training step of every
    active slot in one pass per stack (each slot's objective its single module's), each
    slot's validation through its single run's module, each slot's callbacks through
    `group` (see GroupHooks)."""

    def __init__(self, group: GroupHooks, stacks: Sequence[Stack], runs: Sequence[nn.Module],
                 reference: int, log_every: int) -> None:
        super().__init__()
        self.automatic_optimization = False
        self.group, self.reference, self.log_every = group, reference, log_every
        first = runs[0]  # trainer.* keys split groups: every run's module has these settings
        self.accumulate = first.accumulate_grad_batches
        self.clip = (first.gradient_clip_val, first.gradient_clip_algorithm)
        self.stacks = nn.ModuleList(stacks)
        self.runs = nn.ModuleList(runs)  # each slot's single-run Autoencoder
        self.vaes = [run for run in runs if getattr(run, "vae", None) is not None]
        self.where = {k: (stack, j) for stack in stacks for j, k in enumerate(stack.members)}
        order = [k for stack in stacks for k in stack.members]
        self.unpermute = None if order == sorted(order) else torch.tensor(
            sorted(range(len(order)), key=order.__getitem__))
        self.active = [True] * len(runs)
        self.plain_backward = False
        self.sums: dict[str, torch.Tensor] = {}
        self.count = self.seen = 0
        self.tic = 0.0

    def setup(self, stage: str) -> None:
        for run in self.runs:
            run.trainer = self.trainer  # the group's real Trainer (Lightning's public setter)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return self.runs[self.reference].optimizer_factory(self.stacks.parameters())

    def on_fit_start(self) -> None:
        self.lr_scale = LrScale(self.stacks, self.group.lrs, self.reference)

    def on_train_start(self) -> None:
        self.plain_backward = not backward_is_heard(self)  # aelab.training.backward
        self.group.start_training()  # every module and data set is on the device by now

    def on_train_epoch_start(self) -> None:
        self.group.start_epoch()
        self.sums, self.count, self.seen = {}, 0, 0
        self.tic = time.perf_counter()

    # ------------------------------------------------------------ slots

    def copy_to_net(self, k: int, grads: bool = False) -> None:
        """Slot k's weights (and gradients) into its single run's module."""
        stack, j = self.where[k]
        stack.copy_slot_to(j, self.runs[k], grads)

    def mask(self, k: int) -> None:
        """Stop slot k: zero its weights, gradients and optimiser state; train the others."""
        stack, j = self.where[k]
        stack.zero_slot(j, self.trainer.optimizers[0])
        self.active[k] = False

    def _in_slot_order(self, values: list[torch.Tensor]) -> torch.Tensor:
        flat = torch.cat(values)
        return flat if self.unpermute is None else flat[self.unpermute.to(flat.device)]

    # ------------------------------------------------------------ training

    def training_step(self, chunk: list[list[torch.Tensor]], batch_idx: int) -> None:
        """One optimiser step of every active slot per step of `chunk` (a call's
        `steps_per_call` lists of per-slot batches), then the divergence check over them."""
        group, optimizer, active = self.group, self.optimizers(), self.active
        accumulate = self.accumulate
        last_call = batch_idx == self.trainer.num_training_batches - 1
        pending, steps = [], []
        for i, batches in enumerate(chunk):
            step = self.trainer.global_step
            first = self.seen % accumulate == 0  # as Autoencoder.training_step counts them
            self.seen += 1
            steps_now = self.seen % accumulate == 0 or (last_call and i == len(chunk) - 1)
            for run in self.vaes:  # a VAE's KL warm-up: at the single run's fractional epoch
                run._kl_epoch = self.current_epoch + (self.seen - 1) / run._steps_per_epoch
            total, objectives, metrics = None, [], []
            for stack in self.stacks:
                objective, values = stack.objectives(batches, active)
                on = [j for j, k in enumerate(stack.members) if active[k]]
                if on:
                    part = objective.sum() if len(on) == stack.slots else objective[on].sum()
                    total = part if total is None else total + part
                objectives.append(objective.detach())
                metrics.append(values)
            values = {key: self._in_slot_order([m[key] for m in metrics]) for key in metrics[0]}
            if first and step % self.log_every == 0:
                group.log_step(values["train/loss"], step)
            if first:
                optimizer.zero_grad()
            if total is not None:
                loss = total / accumulate if accumulate > 1 else total
                if self.plain_backward:
                    loss.backward()
                else:
                    self.manual_backward(loss)
            if steps_now:
                group.sample_gradients(step, before=True)
                self.lr_scale.keep()
                optimizer.step()  # clips in on_before_optimizer_step, as a single run does
                self.lr_scale.apply()
                group.sample_gradients(step, before=False)
            n = batches[0].shape[0]
            for key, value in values.items():
                self.sums[key] = self.sums[key] + value * n if key in self.sums else value * n
            self.count += n
            pending.append(self._in_slot_order(objectives))
            steps.append(step)
        group.check_losses(torch.stack(pending), steps)
        if not any(active):
            self.trainer.should_stop = True

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        """Each slot's gradients clipped as its single module clips them (trainer.
        gradient_clip_val, gradient_clip_algorithm), after the diagnostics' sample."""
        value, algorithm = self.clip
        if value:
            for stack in self.stacks:
                stack.clip_gradients(value, algorithm)

    # ------------------------------------------------------------ validation

    def on_validation_epoch_start(self) -> None:
        self.group.start_validation()

    def validation_step(self, batch: torch.Tensor, batch_idx: int,
                        dataloader_idx: int = 0) -> None:
        """The batch of validation set `dataloader_idx` (one per normalisation in the group)
        through the single-run module of every active slot that validates on it."""
        for k, run in enumerate(self.runs):
            if self.active[k] and self.group.data_index[k] == dataloader_idx:
                run.validation_step(batch, batch_idx)

    def on_validation_epoch_end(self) -> None:
        self.group.end_validation()

    def test_step(self, batch: torch.Tensor, batch_idx: int, dataloader_idx: int = 0) -> None:
        """The batch of test set `dataloader_idx` through the single-run module of every
        active slot that tests on it (its net holding its weights: StackedGroup._finish);
        each module keeps its own means (`evaluated()`)."""
        for k, run in enumerate(self.runs):
            if self.active[k] and self.group.data_index[k] == dataloader_idx:
                run.test_step(batch, batch_idx)

    def on_train_epoch_end(self) -> None:
        self.group.end_epoch(self.sums, self.count)
        active = self.active
        done = [float(self.sums["train/loss"][k] / max(self.count, 1))
                for k in range(len(active)) if active[k] and self.sums]
        log.info("stacked epoch %d/%d: %d runs active, train/loss %s, %.1f s",
                 self.trainer.current_epoch + 1, self.trainer.max_epochs, sum(active),
                 " ".join(f"{v:.5f}" for v in done), time.perf_counter() - self.tic)
        if not any(active):
            self.trainer.should_stop = True


class SlotCheckpoints(CheckpointIO):
    """Write the group Trainer's checkpoint, at the path a run's LastCheckpoint passes to
    `trainer.save_checkpoint` (in its run folder), as that run's own: Lightning's loop
    state as it is, the run's weights, optimiser state and callback states in place of the
    group's (GroupHooks.write_checkpoint)."""

    def __init__(self, group: GroupHooks) -> None:
        self.group = group

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any,
                        storage_options: Any | None = None) -> None:
        self.group.write_checkpoint(checkpoint, Path(path))

    def load_checkpoint(self, path: Any, map_location: Any | None = None) -> dict[str, Any]:
        raise RuntimeError(
            f"{Path(path)}: a stacked group does not load checkpoints; with resume=true each "
            f"interrupted run continues alone from its own last.ckpt.")

    def remove_checkpoint(self, path: Any) -> None:
        Path(path).unlink(missing_ok=True)
