"""The Lightning side of a stacked group: one LightningModule over the StackedMLP, trained by
one Lightning Trainer, and a CheckpointIO that writes that Trainer's checkpoint as one
`last.ckpt` per run.

The group's runs share the data size, batch size, `steps_per_call` and epochs, so the
group's fit loop takes exactly the calls, optimiser steps and validation batches that each
single run's would; Lightning's own loop state (epoch, global step, progress counters) is
therefore each run's, and `SlotCheckpoints` only replaces the per-run parts of the
checkpoint (weights, optimiser state, callback states). A single `resume=true` run
continues such a checkpoint through `Trainer.fit(ckpt_path=...)` like one of its own.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol

import lightning as L
import torch
from lightning.pytorch.plugins.io import CheckpointIO

from aelab.data import TensorBatches
from aelab.stacked.net import StackedMLP


class GroupHooks(Protocol):
    """What StackedModule asks of its group (aelab.stacked.group.StackedGroup): the slots, and
    each slot's part of every step, validation and epoch end. A protocol, so that this module
    does not import the group that imports it."""

    slots: list[Any]
    lrs: list[float]
    data_index: list[int]

    def start_epoch(self, epoch: int, global_step: int) -> None: ...
    def objectives(self, stacked: StackedMLP, x: torch.Tensor,
                   active: list[bool]) -> tuple[list[torch.Tensor], list[torch.Tensor]]: ...
    def log_step(self, losses: list[torch.Tensor], active: list[bool], step: int) -> None: ...
    def sample_gradients(self, stacked: StackedMLP, active: list[bool], step: int,
                         before: bool) -> None: ...
    def check_losses(self, stacked: StackedMLP, optimizer: torch.optim.Optimizer,
                     active: list[bool], objectives: torch.Tensor, steps: list[int],
                     global_step: int) -> None: ...
    def start_validation(self, stacked: StackedMLP, optimizer: torch.optim.Optimizer,
                         active: list[bool]) -> None: ...
    def end_validation(self, stacked: StackedMLP, optimizer: torch.optim.Optimizer,
                       active: list[bool], global_step: int, sanity: bool) -> None: ...
    def end_epoch(self, stacked: StackedMLP, optimizer: torch.optim.Optimizer,
                  active: list[bool], train_losses: torch.Tensor, global_step: int) -> None: ...
    def save_checkpoints(self, checkpoint: dict[str, Any]) -> None: ...

log = logging.getLogger("aelab")


class StackedBatches:
    """One training batch per slot per step, stacked: (K, B, pixels); slot k's batches are
    its single run's (its own `TensorBatches`)."""

    def __init__(self, batches: list[TensorBatches]) -> None:
        self.batches = batches

    def __len__(self) -> int:
        return len(self.batches[0])

    def __iter__(self) -> Iterator[torch.Tensor]:
        iterators = [iter(b) for b in self.batches]
        for _ in range(len(self)):
            yield torch.stack([next(it) for it in iterators])


class LrScale:
    """Each slot's own learning rate, under one optimiser built with the largest, `lrs[reference]`.

    Every torch optimiser aelab offers (Adam, SGD with momentum, RMSprop, Adadelta) moves a
    parameter by lr times an update whose state does not depend on lr, so slot k's step is the
    reference step times lrs[k] / lrs[reference]: `keep` the weights before the step, `apply`
    the scale after it. Nothing happens when every slot has the reference lr.
    """

    def __init__(self, stacked: StackedMLP, lrs: list[float], reference: int) -> None:
        self.params = list(stacked.params)
        top = lrs[reference]
        scale = [lr / top if top else 1.0 for lr in lrs]
        self.scale = None if all(s == 1.0 for s in scale) else torch.tensor(
            scale, device=self.params[0].device).view(-1, 1, 1)
        self.before: list[torch.Tensor] = []

    @torch.no_grad()
    def keep(self) -> None:
        if self.scale is not None:
            self.before = [p.detach().clone() for p in self.params]

    @torch.no_grad()
    def apply(self) -> None:
        if self.scale is None:
            return
        for p, old in zip(self.params, self.before):
            p.sub_(old).mul_(self.scale).add_(old)


class StackedModule(L.LightningModule):
    """The group's StackedMLP under Lightning's manual optimisation: every training step of
    every active slot in one batched pass, each slot's validation through its single run's
    module, each slot's epoch-end work through `group` (see GroupHooks)."""

    def __init__(self, group: GroupHooks, stacked: StackedMLP, reference: int) -> None:
        super().__init__()
        self.automatic_optimization = False
        self.group, self.stacked, self.reference = group, stacked, reference
        self.active = [True] * stacked.slots
        self.log_every = int(group.slots[0].cfg.trainer.get("log_every_n_steps", 50))
        self.sums = torch.zeros(stacked.slots)
        self.count = 0
        self.tic = 0.0

    def configure_optimizers(self) -> torch.optim.Optimizer:
        factory = self.group.slots[self.reference].parts.module.optimizer_factory
        return factory(self.stacked.parameters())

    def on_fit_start(self) -> None:
        self.lr_scale = LrScale(self.stacked, self.group.lrs, self.reference)
        for slot in self.group.slots:
            slot.parts.module.to(self.device)

    def on_train_epoch_start(self) -> None:
        self.group.start_epoch(self.trainer.current_epoch, self.trainer.global_step)
        self.sums = torch.zeros(self.stacked.slots, device=self.device)
        self.count = 0
        self.tic = time.perf_counter()

    def training_step(self, chunk: list[torch.Tensor], batch_idx: int) -> None:
        """One optimiser step of every active slot per stacked batch in `chunk` (a call's
        `steps_per_call` batches), then the divergence check over the call's steps."""
        group, optimizer, active = self.group, self.optimizers(), self.active
        raw = self.trainer.optimizers[0]
        pending, steps = [], []
        for x in chunk:
            step = self.trainer.global_step
            objectives, losses = group.objectives(self.stacked, x, active)
            if step % self.log_every == 0:
                group.log_step(losses, active, step)
            optimizer.zero_grad()
            self.manual_backward(torch.stack([o for o, a in zip(objectives, active) if a]).sum())
            group.sample_gradients(self.stacked, active, step, before=True)
            self.lr_scale.keep()
            optimizer.step()
            self.lr_scale.apply()
            group.sample_gradients(self.stacked, active, step, before=False)
            self.sums += torch.stack(losses) * x.shape[1]
            self.count += x.shape[1]
            pending.append(torch.stack(objectives).detach())
            steps.append(step)
        group.check_losses(self.stacked, raw, active, torch.stack(pending), steps,
                           self.trainer.global_step)
        if not any(active):
            self.trainer.should_stop = True

    def on_validation_epoch_start(self) -> None:
        self.group.start_validation(self.stacked, self.trainer.optimizers[0], self.active)

    def validation_step(self, batch: torch.Tensor, batch_idx: int,
                        dataloader_idx: int = 0) -> None:
        """The batch of validation set `dataloader_idx` (one per normalisation in the group)
        through the single-run module of every active slot that validates on it."""
        for k, slot in enumerate(self.group.slots):
            if self.active[k] and self.group.data_index[k] == dataloader_idx:
                slot.parts.module.validation_step(batch, batch_idx)

    def on_validation_epoch_end(self) -> None:
        self.group.end_validation(self.stacked, self.trainer.optimizers[0], self.active,
                                  self.trainer.global_step, self.trainer.sanity_checking)

    def on_train_epoch_end(self) -> None:
        group, active = self.group, self.active
        group.end_epoch(self.stacked, self.trainer.optimizers[0], active,
                        self.sums / max(self.count, 1), self.trainer.global_step)
        if any(slot.checkpoint for k, slot in enumerate(group.slots) if active[k]):
            self.trainer.save_checkpoint(group.slots[0].out_dir / "stacked.ckpt")
        done = [float(self.sums[k] / max(self.count, 1)) for k in range(len(active)) if active[k]]
        log.info("stacked epoch %d/%d: %d runs active, train/loss %s, %.1f s",
                 self.trainer.current_epoch + 1, self.trainer.max_epochs, sum(active),
                 " ".join(f"{v:.5f}" for v in done), time.perf_counter() - self.tic)
        if not any(active):
            self.trainer.should_stop = True


class SlotCheckpoints(CheckpointIO):
    """Write the stacked Trainer's checkpoint as each checkpointing active run's `last.ckpt`:
    Lightning's loop state as it is, the run's own weights, optimiser state and callback
    states in place of the group's (GroupHooks.save_checkpoints). Nothing is written at
    the path Lightning passes."""

    def __init__(self, group: GroupHooks) -> None:
        self.group = group

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any,
                        storage_options: Any | None = None) -> None:
        self.group.save_checkpoints(checkpoint)

    def load_checkpoint(self, path: Any, map_location: Any | None = None) -> dict[str, Any]:
        raise RuntimeError(
            f"{Path(path)}: a stacked group does not load checkpoints; with resume=true each "
            f"interrupted run continues alone from its own last.ckpt.")

    def remove_checkpoint(self, path: Any) -> None:
        """Nothing to remove: the group writes no checkpoint of its own."""
