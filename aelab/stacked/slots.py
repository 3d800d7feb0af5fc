"""The runs of a stacked group ("slots"): each one's single-run objects, callbacks and record,
and the helpers that give slot k what a single run would hold (its optimiser state, its
checkpoint, its .hydra/)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from aelab.diagnostics.callback import Diagnostics
from aelab.stacked.net import Stack
from aelab.stacked.plan import run_device
from aelab.training.build import Parts
from aelab.training.callbacks import (
    FiniteGuard,
    LastCheckpoint,
    MetricHistory,
    ReconstructionGrid,
    RunRecord,
)
from aelab.training.record import save_hydra_record
from aelab.training.runstate import RunState


@dataclass
class Slot:
    """One run of the group: its config, its single-run objects and callbacks, its record so
    far. Its module's `run_state` holds its loggers, epoch metrics and data
    (aelab.training.runstate); the Trainer is the group's."""

    cfg: DictConfig
    choices: dict[str, str]
    overrides: list[str]
    parts: Parts
    logger: Any
    guard: FiniteGuard
    record: RunRecord
    diagnostics: Diagnostics | None = None
    grid: ReconstructionGrid | None = None
    checkpoint: LastCheckpoint | None = None
    generator: torch.Generator | None = None  # a VAE's noise: its single run's global RNG state
    history: MetricHistory = field(default_factory=MetricHistory)
    result: dict[str, Any] | None = None

    @property
    def out_dir(self) -> Path:
        return Path(self.cfg.paths.output_dir)

    @property
    def module(self) -> Any:
        return self.parts.module

    @property
    def state(self) -> RunState:
        return self.parts.module.run_state

    def callback_states(self) -> dict[str, Any]:
        """The states a single run's checkpoint keeps of its callbacks, by state key."""
        states = {self.history.state_key: self.history.state_dict(),
                  self.record.state_key: self.record.state_dict()}
        if self.diagnostics is not None:
            states[self.diagnostics.state_key] = self.diagnostics.state_dict()
        return states


def training_device(cfg: DictConfig) -> torch.device:
    """trainer.accelerator cpu -> the CPU; auto, gpu or cuda -> the GPU when there is one."""
    return torch.device(run_device(cfg, torch.cuda.is_available()))


def slot_optimizer_state(stacks: Sequence[Stack], stack: Stack, j: int, full: dict[str, Any],
                         lr: float) -> dict[str, Any]:
    """The optimiser state_dict that the single run of `stack`'s slot j would hold (its own
    slices, its lr, its parameters numbered from 0), from the group optimiser's `full`."""
    offset = 0
    for other in stacks:
        if other is stack:
            break
        offset += len(other.params)
    state = {}
    for i, p in enumerate(stack.params):
        values = full["state"].get(offset + i)
        if values is None:
            continue
        state[i] = {
            name: stack.slot_tensor(i, v, j) if torch.is_tensor(v) and v.shape == p.shape
            else (v.clone() if torch.is_tensor(v) else v)
            for name, v in values.items()
        }
    groups = [{**group, "lr": lr, "params": list(range(len(stack.params)))}
              for group in full["param_groups"]]
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


def write_slot_checkpoint(slot: Slot, checkpoint: dict[str, Any], optimizer_state: dict[str, Any],
                          path: Path) -> None:
    """Slot's checkpoint at `path` (its LastCheckpoint's temporary file, which it then renames
    over last.ckpt): the group Trainer's `checkpoint` (loop state, epoch, global step) with
    the run's own weights (in its net), optimiser state and callback states."""
    mine = {**checkpoint, "state_dict": slot.module.state_dict(),
            "callbacks": slot.callback_states(), "optimizer_states": [optimizer_state],
            "lr_schedulers": []}
    slot.module.on_save_checkpoint(mine)  # what a single run's module adds (load.py)
    torch.save(mine, path)
