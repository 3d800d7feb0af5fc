"""What a callback reads of its own run: the Trainer's, or the run's own in a stacked group.

A run alone owns its Lightning Trainer: its loggers, callback metrics and data module are the
Trainer's. The runs of a stacked group (aelab.stacked) share one real Trainer, whose epoch,
global step, max_epochs, should_stop and state are every run's, and keep what is theirs alone
in their module's `run_state` attribute (a RunState): their loggers, their epoch metrics (what
`trainer.callback_metrics` holds for a run alone: kept from one validation to the next, as
Lightning keeps them) and their data module. aelab's callbacks read these three through
`run_loggers`, `run_metrics` and `run_datamodule`, so one callback serves both. No torch here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class RunState:
    """One run's loggers, epoch metrics and data module, where its Trainer is a group's."""

    loggers: list[Any]
    datamodule: Any
    metrics: dict[str, Any] = field(default_factory=dict)


def run_state(pl_module: Any) -> RunState | None:
    """The module's RunState (a run in a stacked group), or None (a run alone)."""
    return getattr(pl_module, "run_state", None) if pl_module is not None else None


def run_loggers(trainer: Any, pl_module: Any = None) -> list[Any]:
    """The run's loggers: its own in a group, else the Trainer's."""
    state = run_state(pl_module)
    return state.loggers if state is not None else trainer.loggers


def run_metrics(trainer: Any, pl_module: Any = None) -> dict[str, Any]:
    """The run's epoch metrics: its own in a group, else `trainer.callback_metrics`."""
    state = run_state(pl_module)
    return state.metrics if state is not None else trainer.callback_metrics


def run_datamodule(trainer: Any, pl_module: Any = None) -> Any:
    """The run's data module: its own in a group, else the Trainer's."""
    state = run_state(pl_module)
    return state.datamodule if state is not None else trainer.datamodule
