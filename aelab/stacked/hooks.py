"""Each run's callbacks in a stacked group, at the points a single run's Trainer calls them.

The group's LightningModule (aelab.stacked.loop.StackedModule) calls these from its own
Lightning hooks; each run's callbacks (FiniteGuard, Diagnostics, ReconstructionGrid,
MetricHistory, LastCheckpoint) get the group's real Trainer (its epoch, global step, state)
and the run's own single-run module, whose `run_state` holds the run's loggers, epoch metrics
and data (aelab.training.runstate); the run's net holds the run's weights whenever one of
its callbacks looks at it.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import lightning as L
import torch

from aelab.errors import Diverged
from aelab.stacked.slots import Slot, slot_optimizer_state, write_slot_checkpoint

log = logging.getLogger("aelab")


class SlotCallbacks:
    """The GroupHooks of aelab.stacked.loop, for StackedGroup (which sets `slots`, `lrs`,
    `module`, `trainer` and implements `_diverged`)."""

    slots: list[Slot]
    lrs: list[float]
    module: Any  # StackedModule
    trainer: L.Trainer | None
    _sampled: list[tuple[Any, list[tuple[int, Any]], list[torch.Tensor]]]  # the step's samples

    def _diverged(self, k: int, exc: Diverged) -> None:
        raise NotImplementedError

    def _active(self) -> list[tuple[int, Slot]]:
        return [(k, slot) for k, slot in enumerate(self.slots) if self.module.active[k]]

    def _mask(self, k: int, exc: Diverged) -> None:
        self._diverged(k, exc)
        self.module.mask(k)

    def start_training(self) -> None:
        """Each run's on_train_start: its module (steps per epoch), its diagnostics
        (initial weights, probe set, mean image), all on the device already."""
        for _, slot in self._active():
            slot.module.on_train_start()
            if slot.diagnostics is not None:
                slot.diagnostics.on_train_start(self.trainer, slot.module)

    def start_epoch(self) -> None:
        for _, slot in self._active():
            slot.guard.on_train_epoch_start(self.trainer, slot.module)

    def log_step(self, losses: torch.Tensor, step: int) -> None:
        """`train/loss_step` and `train/lr` of each run (one host sync for all)."""
        values = losses.tolist()
        for k, slot in self._active():
            if slot.logger:
                slot.logger.log_metrics({"train/loss_step": values[k], "train/lr": self.lrs[k]},
                                        step=step)

    def sample_gradients(self, step: int, before: bool) -> None:
        """Diagnostics' grads/* samples at the steps each run samples (one in `sample_every`):
        the norms of every sampling slot of a stack in one pass over the stacked gradients
        and weights (Stack.gradient_sample; copying each slot into its net and running its
        single hook took ~10 % of a K=8 epoch), the realised updates after the step."""
        if before:
            self._sampled = []
            for stack in self.module.stacks:
                takers = [(j, self.slots[k].diagnostics) for j, k in enumerate(stack.members)
                          if self.module.active[k] and self.slots[k].diagnostics is not None
                          and self.slots[k].diagnostics.samples(step)]
                sample = stack.gradient_sample() if takers else None
                if sample is None:
                    continue
                norms, split, weights = sample
                for j, diag in takers:
                    diag.add_gradient_sample(norms[j], split[j])
                self._sampled.append((stack, takers, weights))
            return
        for stack, takers, weights in self._sampled:
            ratios = stack.update_ratios(weights)
            for j, diag in takers:
                diag.add_update_sample(ratios[j])
        self._sampled = []

    def check_losses(self, objectives: torch.Tensor, steps: list[int]) -> None:
        """FiniteGuard per run over the last call's steps (one host sync for all runs)."""
        finite = objectives.isfinite().all(0).tolist()
        for k, slot in self._active():
            if finite[k]:
                continue
            try:
                slot.guard.on_train_batch_end(self.trainer, slot.module,
                                              {"objectives": objectives[:, k], "steps": steps},
                                              None, 0)
            except Diverged as exc:
                self._mask(k, exc)

    def start_validation(self) -> None:
        """Each active run's weights into its net, then its weight check."""
        for k, slot in self._active():
            self.module.copy_to_net(k)
            try:
                slot.guard.on_validation_start(self.trainer, slot.module)
            except Diverged as exc:
                self._mask(k, exc)

    def end_validation(self) -> None:
        """Each active run's validation means, logged as its single run logs them (none
        after Lightning's sanity check, whose metrics a single run discards too)."""
        trainer = self.trainer
        if trainer.sanity_checking:
            return
        for _, slot in self._active():
            val = slot.module.evaluated()
            slot.state.metrics.update(val)  # kept until the next validation, as Lightning's
            if slot.logger:
                slot.logger.log_metrics({**{key: float(v) for key, v in val.items()},
                                         "epoch": float(trainer.current_epoch)},
                                        step=trainer.global_step - 1)
            if slot.grid is not None:
                slot.grid.on_validation_epoch_end(trainer, slot.module)

    def end_epoch(self, sums: dict[str, torch.Tensor], count: int) -> None:
        """Each active run's training means (every epoch, validated or not), then its
        epoch-end callbacks in a single run's order: diagnostics, divergence check, history,
        and last its checkpoint."""
        trainer = self.trainer
        means = {key: total / max(count, 1) for key, total in sums.items()}
        for k, slot in self._active():
            self.module.copy_to_net(k)
            train = {key: value[k] for key, value in means.items()}
            train |= slot.module.loss_fn.learned_values()  # gaussian_nll's train/sigma
            slot.state.metrics.update({**train, "train/lr": torch.tensor(self.lrs[k])})
            if slot.logger:
                slot.logger.log_metrics({**{key: float(v) for key, v in train.items()},
                                         "epoch": float(trainer.current_epoch)},
                                        step=trainer.global_step - 1)
            try:
                if slot.diagnostics is not None:
                    slot.diagnostics.on_train_epoch_end(trainer, slot.module)
                slot.guard.on_train_epoch_end(trainer, slot.module)
            except Diverged as exc:
                self._mask(k, exc)
                continue
            slot.history.on_train_epoch_end(trainer, slot.module)
            if slot.checkpoint is not None:
                slot.checkpoint.on_train_epoch_end(trainer, slot.module)

    def write_checkpoint(self, checkpoint: dict[str, Any], path: Path) -> None:
        """The run whose folder holds `path` (its LastCheckpoint's file): its checkpoint there,
        the group Trainer's `checkpoint` with the run's own weights, optimiser state and
        callback states."""
        folder = path.resolve().parent
        found = [k for k, slot in enumerate(self.slots) if slot.out_dir.resolve() == folder]
        if not found:
            raise RuntimeError(f"{path}: no run of this stacked group has its folder there")
        k = found[0]
        self.module.copy_to_net(k)
        stack, j = self.module.where[k]
        optimizer_state = slot_optimizer_state(
            self.module.stacks, stack, j, checkpoint["optimizer_states"][0], self.lrs[k])
        write_slot_checkpoint(self.slots[k], checkpoint, optimizer_state, path)
