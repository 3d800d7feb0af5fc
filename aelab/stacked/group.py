"""Train a group of stackable runs (aelab.stacked.plan) as one StackedMLP, each run in its own
folder as if it had run alone.

Each run ("slot", aelab.stacked.slots) is validated and built exactly as a single run is, so
its initial weights, loss, normalisation and batch order are the single run's. One Lightning
Trainer fits the group (aelab.stacked.loop.StackedModule): one optimiser over the stacked
parameters (Adam, SGD and RMSprop act element by element: K optimisers), and its checkpoint
becomes each run's `last.ckpt`, which a single `resume=true` run continues. Validation, test,
the callbacks, the logger, metrics.json and the HParams session go through each run's own
objects, fed slot k's weights. A slot whose loss or weights become non-finite is recorded
`diverged` and masked; the others go on.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import lightning as L
import torch
from omegaconf import DictConfig, OmegaConf

from aelab.config.validate import instantiate, validate
from aelab.data import StepChunks, TensorBatches
from aelab.diagnostics.callback import Diagnostics
from aelab.errors import Diverged
from aelab.stacked.loop import SlotCheckpoints, StackedBatches, StackedModule
from aelab.stacked.net import StackedMLP
from aelab.stacked.slots import (
    Interrupted,
    Slot,
    SlotTrainer,
    save_record,
    stop_on_sigterm,
    training_device,
    write_slot_checkpoint,
)
from aelab.training.build import build
from aelab.training.callbacks import (
    FiniteGuard,
    LastCheckpoint,
    ReconstructionGrid,
    RunRecord,
    StepProgressBar,
)
from aelab.training.divergence import divergence_causes
from aelab.training.folder import (
    RunFolderLock,
    describe_checkpoint,
    refuse_used_folder,
    remove_stale_events,
)
from aelab.training.record import record_unfinished, run_result, write_result
from aelab.training.run import NVML_CHECK, quiet_lightning, restored_env

log = logging.getLogger("aelab")


class StackedGroup:
    """Train the runs of `cfgs` (one group of the plan) together; `run()` returns their
    metrics.json dicts, in order."""

    def __init__(self, jobs: list[tuple[DictConfig, dict[str, str], list[str]]],
                 swept: set[str] | None = None,
                 hydra_cfgs: dict[str, DictConfig] | None = None) -> None:
        self.jobs = jobs
        self.swept = swept
        self.hydra_cfgs = hydra_cfgs or {}
        self.started = time.perf_counter()
        self.slots: list[Slot] = []
        self.fitting = False  # set once the run folders are written to

    # ------------------------------------------------------------ set up

    def _make_slot(self, cfg: DictConfig, choices: dict[str, str], overrides: list[str],
                   data: Any) -> Slot:
        out_dir = Path(cfg.paths.output_dir)
        if cfg.get("resume") is not True:
            refuse_used_folder(out_dir)
        checked = validate(cfg)
        L.seed_everything(cfg.seed, verbose=False)
        parts = build(checked)  # exactly a single run's objects, its initial weights included
        if any(True for _ in parts.loss.parameters()):
            raise ValueError(f"loss={parts.loss.name} has trainable parameters")
        if data is not None:
            parts.data = data  # one copy of the (identical) splits for the group
        logger = instantiate(cfg.logger) if cfg.get("logger") else False
        callbacks = [instantiate(c) for c in (cfg.get("callbacks") or {}).values() if c]
        trainer = SlotTrainer(parts.data, [logger] if logger else [],
                              int(cfg.trainer.max_epochs))
        return Slot(
            cfg, choices, overrides, parts, logger, trainer,
            FiniteGuard(divergence_causes(cfg, choices)),
            next((c for c in callbacks if isinstance(c, Diagnostics)), None),
            next((c for c in callbacks if isinstance(c, ReconstructionGrid)), None),
            any(isinstance(c, LastCheckpoint) for c in callbacks),
            fingerprint=checked.fingerprint,
        )

    # ------------------------------------------------------------ the run

    def run(self) -> list[dict[str, Any]]:
        quiet_lightning()
        first = self.jobs[0][0]
        if first.get("threads"):
            torch.set_num_threads(int(first.threads))
        device = training_device(first)
        with ExitStack() as stack:
            for cfg, _, _ in self.jobs:
                stack.enter_context(RunFolderLock(Path(cfg.paths.output_dir)))
            datas: dict[str, Any] = {}  # one loaded data set per normalisation
            for cfg, choices, overrides in self.jobs:
                key = OmegaConf.to_yaml(cfg.normalization)
                slot = self._make_slot(cfg, choices, overrides, datas.get(key))
                datas.setdefault(key, slot.parts.data)
                self.slots.append(slot)
            stack.enter_context(restored_env(NVML_CHECK))
            if device.type == "cpu":
                os.environ[NVML_CHECK] = "0"  # as aelab.training.run: Adam's CUDA check stays cheap
            try:
                with stop_on_sigterm():
                    self._fit(device)
            except BaseException as exc:
                if not self.fitting:
                    raise
                if isinstance(exc, SystemExit) and isinstance(exc.__context__, KeyboardInterrupt):
                    exc = exc.__context__  # Lightning turns Ctrl+C into sys.exit(1)
                self._record_stop(exc)
                raise exc from None
        return [slot.result for slot in self.slots]

    def _record_stop(self, exc: BaseException) -> None:
        """metrics.json of every run still training when `exc` stopped the group: SIGINT
        (KeyboardInterrupt) and SIGTERM (Interrupted) are "interrupted" (resumable from
        last.ckpt), anything else "failed"."""
        interrupted = isinstance(exc, (KeyboardInterrupt, Interrupted))
        for slot in self.slots:
            if slot.result is not None:
                continue
            epoch = f"{slot.trainer.current_epoch + 1}/{slot.trainer.max_epochs}"
            message = (f"interrupted in epoch {epoch}; {describe_checkpoint(slot.out_dir)}. "
                       f"Continue with the same command plus resume=true (the run then "
                       f"continues alone).") if interrupted else exc
            self._as_job(slot)
            slot.result = record_unfinished(
                slot.out_dir, slot.cfg, slot.choices, self.started,
                "interrupted" if interrupted else "failed", error=message,
                history=slot.history.history, overrides=slot.overrides,
                logger=slot.logger, job=self._job(slot))

    def _fit(self, device: torch.device) -> None:
        """Train the group with one Lightning Trainer (aelab.stacked.loop.StackedModule)."""
        slots, cfg = self.slots, self.slots[0].cfg
        self.fitting = True
        datas = list({id(s.parts.data): s.parts.data for s in slots}.values())
        for data in datas:
            data.splits = {k: v.to(device) for k, v in data.splits.items()}
        self.data_index = [next(i for i, d in enumerate(datas) if d is s.parts.data)
                           for s in slots]  # slot k validates on val_dataloaders[index]
        stacked = StackedMLP([s.parts.net for s in slots])
        self.lrs = [float(slot.cfg.optimizer.lr) for slot in slots]
        reference = max(range(len(slots)), key=lambda k: self.lrs[k])
        self.module = module = StackedModule(self, stacked, reference)
        per_call = max(1, int(cfg.get("steps_per_call", 1)))

        def train_batches(slot: Slot) -> TensorBatches:
            """The slot's single-run batches: its data set, its seed's order and samples."""
            data = slot.parts.data
            return TensorBatches(data.splits["train"], data.batch_size, shuffle=True,
                                 sample=data.normalization.sample if data.stochastic else None,
                                 seed=slot.cfg.seed, epoch=lambda: module.current_epoch)

        batches = StackedBatches([train_batches(s) for s in slots])
        progress = bool(cfg.trainer.get("enable_progress_bar", True)) and sys.stdout.isatty()
        trainer = L.Trainer(
            max_epochs=int(cfg.trainer.max_epochs),
            accelerator="gpu" if device.type == "cuda" else "cpu",
            devices=1,
            logger=False,  # each run logs to its own logger
            enable_checkpointing=False,  # SlotCheckpoints writes each run's last.ckpt
            enable_model_summary=False,
            # a bar on a terminal only; elsewhere the group's "stacked epoch" lines
            enable_progress_bar=progress,
            callbacks=[StepProgressBar(20, epoch_lines=False)] if progress else [],
            num_sanity_val_steps=0,
            inference_mode=False,  # validation copies each slot's weights into its net
            plugins=[SlotCheckpoints(self)],
            default_root_dir=str(slots[0].out_dir),
        )
        for slot in slots:
            self._as_job(slot)
            save_record(slot, str(slot.cfg.paths.output_dir) in self.hydra_cfgs)
            remove_stale_events(slot.out_dir)
            log.info("training stacked (%d runs) -> %s", len(slots), slot.out_dir)
            if slot.diagnostics is not None:
                slot.diagnostics.on_train_start(slot.trainer, slot.parts.module)
        trainer.fit(module, train_dataloaders=StepChunks(batches, per_call),
                    val_dataloaders=[d.val_dataloader() for d in datas])
        epochs = trainer.current_epoch
        for k in range(len(slots)):
            if module.active[k]:
                self._finish(k, stacked, trainer.global_step, epochs)

    # ------------------------------------------------------------ StackedModule's hooks

    def start_epoch(self, epoch: int, global_step: int) -> None:
        for slot in self.slots:
            slot.trainer.current_epoch, slot.trainer.global_step = epoch, global_step
            slot.guard.on_train_epoch_start(slot.trainer, slot.parts.module)

    def objectives(self, stacked: StackedMLP, x: torch.Tensor,
                   active: list[bool]) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Each slot's objective (its single run's: the loss's reduction plus its own L2
        penalty) and its detached per-pixel training loss; zeros for masked slots."""
        logits = stacked(x)
        recon = stacked.output_activation(logits)
        # unbind, not logits[k]: indexing's backward writes a zero (K, B, pixels) gradient per
        # slot (K^2 memory traffic: 26 against 17 ms a step at K=8, measured); the
        # gradients are the same to the bit
        logit_k, recon_k, x_k = logits.unbind(0), recon.unbind(0), x.unbind(0)
        penalised = [slot.parts.module.l2_penalty and active[k]
                     for k, slot in enumerate(self.slots)]
        squares = torch.stack([w.square().sum((1, 2)) for w in stacked.weights]).sum(0) \
            if any(penalised) else None  # (K,) sum ||W||^2 of each slot, in one pass
        objectives, losses = [], []
        zero = x.new_zeros(())
        for k, slot in enumerate(self.slots):
            if not active[k]:
                objectives.append(zero)
                losses.append(zero)
                continue
            loss_fn = slot.parts.module.loss_fn
            per_pixel = loss_fn.per_pixel(logit_k[k], recon_k[k], x_k[k])
            objective = loss_fn.reduce(per_pixel)
            if penalised[k]:
                objective = objective + slot.parts.module.l2_penalty * squares[k]
            objectives.append(objective)
            losses.append(per_pixel.detach().mean())
        return objectives, losses

    def log_step(self, losses: list[torch.Tensor], active: list[bool], step: int) -> None:
        values = torch.stack(losses).tolist()  # one host sync for all slots
        for k, slot in enumerate(self.slots):
            if active[k] and slot.logger:
                slot.logger.log_metrics({"train/loss_step": values[k], "train/lr": self.lrs[k]},
                                        step=step)

    def sample_gradients(self, stacked: StackedMLP, active: list[bool], step: int,
                         before: bool) -> None:
        """Diagnostics' grads/* samples: the single run's hooks, on its net holding slot k's
        weights (and gradients), at the steps it samples (one in `sample_every`)."""
        for k, slot in enumerate(self.slots):
            diag = slot.diagnostics
            if not active[k] or diag is None:
                continue
            slot.trainer.global_step = step
            net, module = slot.parts.net, slot.parts.module
            if before and diag.samples_before_step(step):
                stacked.copy_slot_to(k, net, grads=True)
                diag.on_before_optimizer_step(slot.trainer, module, None)
            elif not before and diag.measures_update:
                stacked.copy_slot_to(k, net)
                diag.on_train_batch_end(slot.trainer, module, None, None, 0)

    def check_losses(self, stacked: StackedMLP, optimizer: torch.optim.Optimizer,
                     active: list[bool], objectives: torch.Tensor, steps: list[int],
                     global_step: int) -> None:
        """FiniteGuard per slot over the last call's steps (one host sync for all slots)."""
        finite = objectives.isfinite().all(0).tolist()
        for k, slot in enumerate(self.slots):
            if not active[k] or finite[k]:
                continue
            slot.trainer.global_step = global_step
            try:
                slot.guard.on_train_batch_end(slot.trainer, slot.parts.module,
                                              {"objectives": objectives[:, k], "steps": steps},
                                              None, 0)
            except Diverged as exc:
                self._mask(k, exc, stacked, optimizer, active)

    def start_validation(self, stacked: StackedMLP, optimizer: torch.optim.Optimizer,
                         active: list[bool]) -> None:
        """Each active slot's weights into its net, its module in eval mode."""
        for k, slot in enumerate(self.slots):
            if not active[k]:
                continue
            stacked.copy_slot_to(k, slot.parts.net)
            slot.parts.module.eval()
            try:
                slot.guard.on_validation_start(slot.trainer, slot.parts.module)
            except Diverged as exc:
                self._mask(k, exc, stacked, optimizer, active)

    def end_validation(self, stacked: StackedMLP, optimizer: torch.optim.Optimizer,
                       active: list[bool], train_losses: torch.Tensor, global_step: int) -> None:
        """Each active slot's validation means, logged as its single run logs them."""
        train = train_losses.tolist()
        for k, slot in enumerate(self.slots):
            if not active[k]:
                continue
            module, trainer = slot.parts.module, slot.trainer
            module.train()
            trainer.global_step = global_step
            val = module.evaluated()
            trainer.callback_metrics = {"train/loss": torch.tensor(train[k]),
                                        "train/lr": torch.tensor(self.lrs[k]), **val}
            if slot.logger:
                epoch = float(trainer.current_epoch)
                slot.logger.log_metrics({"train/loss": train[k], "epoch": epoch},
                                        step=global_step - 1)
                slot.logger.log_metrics({**{key: float(v) for key, v in val.items()},
                                         "epoch": epoch}, step=global_step - 1)
            if slot.grid is not None:
                slot.grid.on_validation_epoch_end(trainer, module)

    def end_epoch(self, stacked: StackedMLP, optimizer: torch.optim.Optimizer,
                  active: list[bool]) -> None:
        """Each active slot's epoch-end callbacks (diagnostics, divergence check, history)."""
        for k, slot in enumerate(self.slots):
            if not active[k]:
                continue
            trainer, module = slot.trainer, slot.parts.module
            try:
                if slot.diagnostics is not None:
                    slot.diagnostics.on_train_epoch_end(trainer, module)
                slot.guard.on_train_epoch_end(trainer, module)
            except Diverged as exc:
                self._mask(k, exc, stacked, optimizer, active)
                continue
            slot.history.on_train_epoch_end(trainer, module)

    def _mask(self, k: int, exc: Diverged, stacked: StackedMLP,
              optimizer: torch.optim.Optimizer, active: list[bool]) -> None:
        self._diverged(k, exc)
        stacked.zero_slot(k, optimizer)
        active[k] = False

    def save_checkpoints(self, checkpoint: dict[str, Any]) -> None:
        """Each active checkpointing run's last.ckpt (atomically): the group Trainer's
        `checkpoint` (Lightning's loop state, epoch, global step) with the run's own weights,
        optimiser state and callback states."""
        module = self.module
        for k, slot in enumerate(self.slots):
            if not (slot.checkpoint and module.active[k]):
                continue
            record = RunRecord(slot.fingerprint, slot.overrides)
            callbacks = {slot.history.state_key: slot.history.state_dict(),
                         record.state_key: record.state_dict()}
            if slot.diagnostics is not None:
                callbacks[slot.diagnostics.state_key] = slot.diagnostics.state_dict()
            write_slot_checkpoint(slot, k, module.stacked, checkpoint, callbacks, self.lrs[k])

    def _as_job(self, slot: Slot) -> None:
        """Make the slot's Hydra job config current (under the Hydra launcher), so that what
        aelab.training.run writes from HydraConfig (`.hydra/`) is this run's."""
        hydra_cfg = self.hydra_cfgs.get(str(slot.cfg.paths.output_dir))
        if hydra_cfg is not None:
            from hydra.core.hydra_config import HydraConfig

            HydraConfig.instance().set_config(hydra_cfg)

    def _job(self, slot: Slot) -> tuple[list[str], set[str]]:
        """(overrides, swept keys) for the run's HParams session, as its Hydra job's."""
        return slot.overrides, set(self.swept) if self.swept is not None else set()

    def _diverged(self, k: int, exc: Diverged) -> None:
        slot = self.slots[k]
        message = f"{exc}\n{describe_checkpoint(slot.out_dir)}."
        log.error("%s: %s", slot.out_dir, message)
        summary = slot.diagnostics.summary(diverged=exc.what) if slot.diagnostics else {}
        self._as_job(slot)
        slot.result = record_unfinished(
            slot.out_dir, slot.cfg, slot.choices, self.started, "diverged", error=message,
            history=slot.history.history, overrides=slot.overrides, logger=slot.logger,
            job=self._job(slot),
            diverged_at={"epoch": exc.epoch, "step": exc.step, "global_step": exc.global_step},
            **summary,
        )

    def _finish(self, k: int, stacked: StackedMLP, global_step: int, epochs: int) -> None:
        """Slot k's test, metrics.json and HParams session, as aelab.training.run writes them."""
        slot, module = self.slots[k], self.slots[k].parts.module
        stacked.copy_slot_to(k, slot.parts.net)
        trainer = slot.trainer
        trainer.global_step = global_step
        if slot.diagnostics is not None:
            slot.diagnostics.on_train_end(trainer, module)
        tested = module.evaluate(trainer.datamodule.test_dataloader(), "test")
        test = {key.removeprefix("test/"): float(v) for key, v in tested.items()}
        test |= {"step": float(global_step), "epoch": float(epochs)}
        if slot.logger:
            slot.logger.log_metrics({f"test/{key}": v for key, v in test.items()
                                     if key not in ("step", "epoch")} | {"epoch": float(epochs)},
                                    step=global_step)
        summary = slot.diagnostics.summary() if slot.diagnostics is not None else {}
        result = run_result(slot.out_dir, slot.cfg, slot.choices, slot.overrides, self.started,
                            "completed", slot.history.history, epochs=epochs, test=test,
                            stacked={"runs": len(self.slots), "slot": k}, **summary)
        write_result(slot.out_dir, slot.cfg, result, slot.logger, self._job(slot))
        log.info("test mse %.5f  test bce %.5f  (%d epochs, stacked) -> %s", test["mse"],
                 test["bce"], epochs, slot.out_dir)
        slot.result = result


def train_group(jobs: list[tuple[DictConfig, dict[str, str], list[str]]],
                swept: set[str] | None = None,
                hydra_cfgs: dict[str, DictConfig] | None = None) -> list[dict[str, Any]]:
    """Train `jobs` ((config, choices, overrides) of stackable runs) as one stacked model;
    `swept`: the keys the sweep varies (marked in HParams); `hydra_cfgs`: run folder -> its
    Hydra job config, when Hydra launched the sweep (hydra/launcher=stacked)."""
    return StackedGroup(jobs, swept, hydra_cfgs).run()
