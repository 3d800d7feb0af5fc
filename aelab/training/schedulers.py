"""Learning-rate schedulers (`scheduler=...`): torch's own, built from the config group.

Each option names a torch scheduler and when it is stepped (`interval`: after every optimiser
`step` or every `epoch`); `plateau` is stepped after each validation with `val/loss`. A
length left `null` (`total`) is the whole run, in the scheduler's interval.
"""

from __future__ import annotations

import inspect
from typing import Any

import torch
from torch.optim import lr_scheduler as sched

from aelab.errors import ConfigError

INTERVALS = ("step", "epoch")


def cosine(optimizer: torch.optim.Optimizer, total: int, eta_min: float = 0.0) -> Any:
    """Cosine annealing from the optimiser's lr to `eta_min` over `total` intervals."""
    return sched.CosineAnnealingLR(optimizer, T_max=total, eta_min=eta_min)


def step(optimizer: torch.optim.Optimizer, total: int, step_size: int = 5,
         gamma: float = 0.5) -> Any:
    """The lr times `gamma` every `step_size` intervals."""
    return sched.StepLR(optimizer, step_size=step_size, gamma=gamma)


def plateau(optimizer: torch.optim.Optimizer, total: int, factor: float = 0.5,
            patience: int = 2, threshold: float = 1e-4) -> Any:
    """The lr times `factor` when `val/loss` has not improved for `patience` validations."""
    return sched.ReduceLROnPlateau(optimizer, mode="min", factor=factor, patience=patience,
                                   threshold=threshold)


def warmup_cosine(optimizer: torch.optim.Optimizer, total: int, warmup: int = 100,
                  start_factor: float = 0.01, eta_min: float = 0.0) -> Any:
    """A linear warm-up from `start_factor` x lr over `warmup` intervals, then cosine."""
    return sched.SequentialLR(
        optimizer,
        [sched.LinearLR(optimizer, start_factor=start_factor, total_iters=warmup),
         sched.CosineAnnealingLR(optimizer, T_max=total - warmup, eta_min=eta_min)],
        milestones=[warmup],
    )


BUILDERS = {"cosine": cosine, "step": step, "plateau": plateau, "warmup_cosine": warmup_cosine}


def check_options(config: dict[str, Any]) -> tuple[str, str, dict[str, Any]]:
    """(name, interval, the builder's options) of a `scheduler` config; ConfigError for a name,
    an interval or an option that cannot work (aelab.config.validate, before anything)."""
    options = dict(config)
    name = options.pop("name", "none")
    if name != "none" and name not in BUILDERS:
        raise ConfigError(f"scheduler.name={name!r} is unknown; choose none or one of "
                          f"{', '.join(BUILDERS)}.")
    interval = options.pop("interval", "epoch")
    if interval not in INTERVALS or (name == "plateau" and interval != "epoch"):
        raise ConfigError(f"scheduler.interval={interval!r} must be step or epoch "
                          f"(plateau: epoch, after each validation).")
    options.pop("total", None)
    if name == "none":
        return name, interval, options
    accepted = set(inspect.signature(BUILDERS[name]).parameters) - {"optimizer", "total"}
    unknown = sorted(set(options) - accepted)
    if unknown:
        raise ConfigError(
            f"scheduler={name} takes {', '.join(sorted(accepted))}, not "
            f"{', '.join(unknown)}; remove scheduler.{unknown[0]}."
        )
    return name, interval, options


def resolve(config: dict[str, Any], steps_per_epoch: int,
            epochs: int) -> tuple[str, str, int, dict[str, Any]]:
    """(name, interval, total, the builder's options) of a `scheduler` config, its length
    (`total`; null: the whole run) checked against the run's (build() calls this once the
    data is loaded, before training)."""
    name, interval, options = check_options(config)
    total = config.get("total") or (
        epochs * steps_per_epoch if interval == "step" else epochs
    )
    warmup = options.get("warmup", 0)
    if name == "warmup_cosine" and not 0 < warmup < total:
        raise ConfigError(
            f"scheduler.warmup={warmup} must be between 0 and the run's length, {total} "
            f"{interval}s; lower scheduler.warmup."
        )
    return name, interval, total, options


def build_scheduler(config: dict[str, Any], optimizer: torch.optim.Optimizer,
                    steps_per_epoch: int, epochs: int) -> dict[str, Any] | None:
    """Lightning's scheduler config for `config` (the `scheduler` group), or None for `none`."""
    name, interval, total, options = resolve(config, steps_per_epoch, epochs)
    if name == "none":
        return None
    scheduler = BUILDERS[name](optimizer, total, **options)
    return {"scheduler": scheduler, "interval": interval, "name": name}
