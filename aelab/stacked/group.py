"""Train a group of stackable runs (aelab.stacked.plan) as one model with a model axis, each
run in its own folder as if it had run alone.

Each run ("slot", aelab.stacked.slots) is validated and built exactly as a single run is, so
its initial weights, loss, normalisation, batch order and (a VAE) noise are the single run's.
Its parameters go into a stack (aelab.stacked.net: StackedMLP for MLPs, FuncStack through
torch.func for any other net), whose objective for slot k is the single run's module's own.
One real Lightning Trainer fits the group (aelab.stacked.loop.StackedModule), with every
trainer.* key the runs set (aelab.stacked.plan's table); one optimiser steps every stack
(Adam, SGD and RMSprop act element by element: K optimisers). Each run's callbacks see that
Trainer and the run's own module (aelab.stacked.hooks); its LastCheckpoint writes its
`last.ckpt`, which a single `resume=true` run continues. Validation, test, the logger,
metrics.json and the HParams session go through each run's own objects. A slot whose loss
or weights become non-finite is recorded `diverged` and masked; the others go on.
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
from aelab.errors import ConfigError, Diverged, Interrupted, stop_on_sigterm
from aelab.stacked.func import FuncStack
from aelab.stacked.hooks import SlotCallbacks
from aelab.stacked.loop import SlotCheckpoints, StackedBatches, StackedModule
from aelab.stacked.net import Stack, StackedMLP, is_mlp
from aelab.stacked.plan import group_trainer_args
from aelab.stacked.slots import Slot, save_record, training_device
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
from aelab.training.runstate import RunState

log = logging.getLogger("aelab")


def make_stacks(slots: list[Slot]) -> list[Stack]:
    """The group's stacks: one StackedMLP when every net is an MLP (the hand-written path,
    faster than vmap where it applies: see aelab.stacked.net), else one FuncStack per
    objective (runs with equal losses and L2 penalties share one vmapped call; a loss with
    parameters of its own, gaussian_nll, stacks there too)."""
    runs = [slot.module for slot in slots]
    if all(is_mlp(run.net) and not any(True for _ in run.loss_fn.parameters()) for run in runs):
        losses = {OmegaConf.to_yaml(slot.cfg.loss) for slot in slots}
        return [StackedMLP(range(len(slots)), runs, one_loss=len(losses) == 1)]
    by_objective: dict[str, list[int]] = {}
    for k, slot in enumerate(slots):
        key = OmegaConf.to_yaml(slot.cfg.loss) + repr(float(slot.cfg.get("l2_penalty") or 0))
        by_objective.setdefault(key, []).append(k)
    generators = [slot.generator for slot in slots]
    return [FuncStack(members, runs, generators) for members in by_objective.values()]


class StackedGroup(SlotCallbacks):
    """Train the runs of `jobs` (one group of the plan) together; `run()` returns their
    metrics.json dicts, in order."""

    def __init__(self, jobs: list[tuple[DictConfig, dict[str, str], list[str]]],
                 swept: set[str] | None = None,
                 hydra_cfgs: dict[str, DictConfig] | None = None,
                 callbacks: list[L.Callback] | None = None) -> None:
        self.jobs = jobs
        self.callbacks = list(callbacks or [])  # the group Trainer's own (a timer, say)
        self.swept = swept
        self.hydra_cfgs = hydra_cfgs or {}
        self.started = time.perf_counter()
        self.slots: list[Slot] = []
        self._sampled = []  # SlotCallbacks.sample_gradients: this step's, until its update
        self.trainer: L.Trainer | None = None
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
        generator = torch.Generator()  # torch's global RNG as the single run trains from it
        generator.set_state(torch.get_rng_state())
        if data is not None:
            parts.data = data  # one copy of the (identical) splits for the group
        logger = instantiate(cfg.logger) if cfg.get("logger") else False
        callbacks = [instantiate(c) for c in (cfg.get("callbacks") or {}).values() if c]
        parts.module.run_state = RunState([logger] if logger else [], parts.data)

        def first(kind: type) -> Any:
            return next((c for c in callbacks if isinstance(c, kind)), None)

        return Slot(cfg, choices, overrides, parts, logger,
                    guard=FiniteGuard(divergence_causes(cfg, choices)),
                    record=RunRecord(checked.fingerprint, overrides),
                    diagnostics=first(Diagnostics), grid=first(ReconstructionGrid),
                    checkpoint=first(LastCheckpoint), generator=generator)

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
        trainer = self.trainer
        epoch = (f"{trainer.current_epoch + 1}/{trainer.max_epochs}" if trainer is not None
                 else "1")
        for slot in self.slots:
            if slot.result is not None:
                continue
            message = (f"interrupted in epoch {epoch}; {describe_checkpoint(slot.out_dir)}. "
                       f"Continue with the same command plus resume=true (the run then "
                       f"continues alone).") if interrupted else exc
            self._as_job(slot)
            slot.result = record_unfinished(
                slot.out_dir, slot.cfg, slot.choices, self.started,
                "interrupted" if interrupted else "failed", error=message,
                history=slot.history.history, overrides=slot.overrides,
                logger=slot.logger, job=self._job(slot))

    def _stacks(self, device: torch.device) -> list[Stack]:
        """The group's stacks, each tried on a few images first: a net that cannot be stacked
        (torch.func refuses it) is refused here, before any run folder is written, and the
        sweep trains its runs alone."""
        slots = self.slots
        if device.type == "cuda":  # the single run draws on the GPU from a generator seeded so
            for slot in slots:
                slot.generator = torch.Generator(device).manual_seed(int(slot.cfg.seed))
        stacks = make_stacks(slots)
        images = slots[0].parts.data.splits["train"][:2]
        for stack in stacks:
            if isinstance(stack, FuncStack):
                try:
                    stack.probe(images)
                except Exception as exc:  # vmap's refusal: an in-place buffer, a random op
                    raise ConfigError(f"model cannot be stacked with torch.func "
                                      f"({type(exc).__name__}: {exc})") from exc
        return stacks

    def _fit(self, device: torch.device) -> None:
        """Train the group with one Lightning Trainer (aelab.stacked.loop.StackedModule)."""
        slots, cfg = self.slots, self.slots[0].cfg
        stacks = self._stacks(device)
        self.fitting = True
        datas = list({id(s.parts.data): s.parts.data for s in slots}.values())
        for data in datas:
            data.splits = {k: v.to(device) for k, v in data.splits.items()}
        self.data_index = [next(i for i, d in enumerate(datas) if d is s.parts.data)
                           for s in slots]  # slot k validates on val_dataloaders[index]
        self.lrs = [float(slot.cfg.optimizer.lr) for slot in slots]
        reference = max(range(len(slots)), key=lambda k: self.lrs[k])
        self.module = module = StackedModule(
            self, stacks, [slot.module for slot in slots], reference,
            int(cfg.trainer.get("log_every_n_steps", 50)))
        per_call = max(1, int(cfg.get("steps_per_call", 1)))

        def train_batches(slot: Slot) -> TensorBatches:
            """The slot's single-run batches: its data set, its seed's order and samples."""
            data = slot.parts.data
            return TensorBatches(data.splits["train"], data.batch_size, shuffle=True,
                                 sample=data.normalization.sample if data.stochastic else None,
                                 seed=slot.cfg.seed, epoch=lambda: module.current_epoch)

        batches = StackedBatches([train_batches(s) for s in slots])
        progress = bool(cfg.trainer.get("enable_progress_bar", True)) and sys.stdout.isatty()
        self.trainer = trainer = L.Trainer(
            # every trainer.* key the runs set is honoured (aelab.stacked.plan's table)
            **{key: value for key, value in group_trainer_args(cfg.trainer).items()
               if key not in ("accelerator", "enable_progress_bar")},
            accelerator="gpu" if device.type == "cuda" else "cpu",
            devices=1,
            logger=False,  # each run logs to its own logger
            enable_checkpointing=False,  # each run's LastCheckpoint writes its last.ckpt
            # a bar on a terminal only; elsewhere the group's "stacked epoch" lines
            enable_progress_bar=progress,
            callbacks=[*self.callbacks,
                       *([StepProgressBar(20, epoch_lines=False)] if progress else [])],
            inference_mode=False,  # validation copies each slot's weights into its net
            plugins=[SlotCheckpoints(self)],
            default_root_dir=str(slots[0].out_dir),
        )
        for slot in slots:
            self._as_job(slot)
            save_record(slot, str(slot.cfg.paths.output_dir) in self.hydra_cfgs)
            remove_stale_events(slot.out_dir)
            log.info("training stacked (%d runs) -> %s", len(slots), slot.out_dir)
        trainer.fit(module, train_dataloaders=StepChunks(batches, per_call),
                    val_dataloaders=[d.val_dataloader() for d in datas])
        done = [k for k in range(len(slots)) if module.active[k]]
        if not done:
            return
        global_step, epochs = trainer.global_step, trainer.current_epoch
        for k in done:  # as a single run's fit ends: its diagnostics' last measurement
            self.module.copy_to_net(k)
            if slots[k].diagnostics is not None:
                slots[k].diagnostics.on_train_end(trainer, slots[k].module)
        # the test through the same Trainer (trainer.limit_test_batches as a single run's)
        trainer.test(module, dataloaders=[d.test_dataloader() for d in datas], verbose=False)
        for k in done:
            self._finish(k, global_step, epochs)

    # ------------------------------------------------------------ records

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

    def _finish(self, k: int, global_step: int, epochs: int) -> None:
        """Slot k's test results, metrics.json and HParams session, as aelab.training.run
        writes them."""
        slot = self.slots[k]
        tested = slot.module.evaluated()
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
                hydra_cfgs: dict[str, DictConfig] | None = None,
                callbacks: list[L.Callback] | None = None) -> list[dict[str, Any]]:
    """Train `jobs` ((config, choices, overrides) of stackable runs) as one stacked model;
    `swept`: the keys the sweep varies (marked in HParams); `hydra_cfgs`: run folder -> its
    Hydra job config, when Hydra launched the sweep (hydra/launcher=stacked); `callbacks`:
    Lightning callbacks of the group's Trainer itself, which see the group as a whole
    (benchmarks.timing.EpochTimer times its epochs)."""
    return StackedGroup(jobs, swept, hydra_cfgs, callbacks).run()
