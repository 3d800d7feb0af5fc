"""The runs of a stacked group ("slots"): each one's single-run objects and record, and the
helpers that give slot k what a single run would hold (its optimiser state, its .hydra/)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from aelab.diagnostics.callback import Diagnostics
from aelab.errors import Interrupted, stop_on_sigterm  # noqa: F401 - aelab.stacked.group's
from aelab.stacked.net import StackedMLP
from aelab.training.build import Parts
from aelab.training.callbacks import (
    FiniteGuard,
    MetricHistory,
    ReconstructionGrid,
    fsync_dir,
    fsync_file,
)
from aelab.training.folder import CHECKPOINT
from aelab.training.record import save_hydra_record


@dataclass
class SlotTrainer:
    """The Trainer attributes that aelab's callbacks read, for one slot of a stacked group."""

    datamodule: Any
    loggers: list[Any]
    max_epochs: int
    current_epoch: int = 0
    global_step: int = 0
    callback_metrics: dict[str, torch.Tensor] = field(default_factory=dict)
    should_stop: bool = False
    sanity_checking: bool = False
    state: Any = field(default_factory=lambda: SimpleNamespace(fn="fit"))


@dataclass
class Slot:
    """One run of the group: its config, its single-run objects and its record so far."""

    cfg: DictConfig
    choices: dict[str, str]
    overrides: list[str]
    parts: Parts
    logger: Any
    trainer: SlotTrainer
    guard: FiniteGuard
    diagnostics: Diagnostics | None
    grid: ReconstructionGrid | None
    checkpoint: bool
    fingerprint: dict[str, Any] = field(default_factory=dict)  # what its checkpoints record
    history: MetricHistory = field(default_factory=MetricHistory)
    result: dict[str, Any] | None = None

    @property
    def out_dir(self) -> Path:
        return Path(self.cfg.paths.output_dir)


def training_device(cfg: DictConfig) -> torch.device:
    """trainer.accelerator cpu -> the CPU; auto, gpu or cuda -> the GPU when there is one."""
    accelerator = str(cfg.trainer.get("accelerator", "auto"))
    if accelerator in ("auto", "gpu", "cuda") and torch.cuda.is_available():
        return torch.device("cuda")
    return torch.device("cpu")


def slot_optimizer_state(stacked: StackedMLP, full: dict[str, Any], k: int,
                         lr: float) -> dict[str, Any]:
    """The optimiser state_dict that slot k's single run would hold (its own slices, its lr),
    from the stacked optimiser's state_dict `full`."""
    state = {}
    for index, values in full["state"].items():
        shape = stacked.params[index].shape
        state[index] = {
            name: StackedMLP.slot_tensor(v, k, weight=index % 2 == 0)
            if torch.is_tensor(v) and v.shape == shape else (v.clone() if torch.is_tensor(v)
                                                             else v)
            for name, v in values.items()
        }
    groups = [{**group, "lr": lr} for group in full["param_groups"]]
    return {"state": state, "param_groups": groups}


def save_record(slot: Slot, launched: bool = False) -> None:
    """`.hydra/` in the run folder, as a single run's: Hydra's own record when Hydra launched
    the sweep (`launched`: its job config is current), else `config.yaml` and
    `overrides.yaml`."""
    if launched:
        save_hydra_record(slot.out_dir, slot.cfg)
        return
    folder = slot.out_dir / ".hydra"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.yaml").write_text(OmegaConf.to_yaml(slot.cfg), encoding="utf-8")
    (folder / "overrides.yaml").write_text(OmegaConf.to_yaml(list(slot.overrides)),
                                           encoding="utf-8")


def write_slot_checkpoint(slot: Slot, k: int, stacked: StackedMLP, checkpoint: dict[str, Any],
                          callbacks: dict[str, Any], lr: float) -> None:
    """Slot k's last.ckpt, atomically: the group Trainer's `checkpoint` (loop state, epoch,
    global step) with the run's own weights, optimiser state and callback states."""
    stacked.copy_slot_to(k, slot.parts.net)
    optimizer_state = slot_optimizer_state(stacked, checkpoint["optimizer_states"][0], k, lr)
    mine = {**checkpoint, "state_dict": slot.parts.module.state_dict(),
            "callbacks": callbacks, "optimizer_states": [optimizer_state], "lr_schedulers": []}
    slot.parts.module.on_save_checkpoint(mine)  # what a single run's module adds (load.py)
    path = slot.out_dir / CHECKPOINT
    tmp = path.with_name(path.name + ".tmp")
    torch.save(mine, tmp)
    fsync_file(tmp)
    os.replace(tmp, path)
    fsync_dir(path.parent)
