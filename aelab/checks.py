"""Checks of the composed config that need no torch: run before anything is built."""

from __future__ import annotations

import math
from typing import Any

from omegaconf import DictConfig, ListConfig

from aelab.errors import ConfigError

MAX_SEED = 2**32 - 1  # numpy's bound; Lightning replaces a seed outside it with a random one


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def check_config(cfg: DictConfig) -> None:
    """Refuse values that cannot train, naming the option to change and how."""
    lr = cfg.optimizer.get("lr")
    if lr is not None and not (_is_number(lr) and math.isfinite(lr) and lr > 0):
        raise ConfigError(
            f"optimizer.lr={lr} must be a positive number, e.g. optimizer.lr=0.001."
        )
    for key in ("batch_size", "eval_batch_size"):
        value = cfg.data.get(key)
        if value is not None and not (_is_int(value) and value > 0):
            raise ConfigError(
                f"data.{key}={value} must be a positive integer, e.g. data.{key}=128."
            )
    for key in ("train_size", "test_size"):
        value = cfg.data.get(key)
        if value is not None and not (_is_int(value) and value > 0):
            raise ConfigError(
                f"data.{key}={value} must be a positive integer, or null for the whole split."
            )
    val_size = cfg.data.get("val_size")
    if val_size is not None and not (_is_int(val_size) and val_size > 0):
        raise ConfigError(f"data.val_size={val_size} must be a positive integer, e.g. 5000.")
    hidden = cfg.model.get("hidden")
    shown = list(hidden) if isinstance(hidden, ListConfig) else hidden
    if (
        not isinstance(hidden, ListConfig)
        or len(hidden) == 0
        or any(not _is_int(w) or w <= 0 for w in hidden)
    ):
        raise ConfigError(
            f"model.hidden={shown} must be a non-empty list of positive integers, "
            f"e.g. model.hidden=[100,50]."
        )
    epochs = cfg.trainer.get("max_epochs")
    if epochs is not None and not (_is_int(epochs) and epochs >= 1):
        raise ConfigError(f"trainer.max_epochs={epochs} must be an integer >= 1.")
    l2 = cfg.get("l2_penalty", 0)
    if not (_is_number(l2) and math.isfinite(l2) and l2 >= 0):
        raise ConfigError(f"l2_penalty={l2} must be a number >= 0 (0 turns it off).")
    seed = cfg.get("seed")
    if not (_is_int(seed) and 0 <= seed <= MAX_SEED):
        raise ConfigError(f"seed={seed} must be an integer in [0, {MAX_SEED}], e.g. seed=0.")
    threads = cfg.get("threads")
    if threads is not None and not (_is_int(threads) and threads > 0):
        raise ConfigError(f"threads={threads} must be a positive integer, or null.")
    steps = cfg.get("steps_per_call", 1)
    if not (_is_int(steps) and steps >= 1):
        raise ConfigError(f"steps_per_call={steps} must be an integer >= 1 (1: every step).")
    clip = cfg.trainer.get("gradient_clip_val")
    accumulate = cfg.trainer.get("accumulate_grad_batches")
    if clip not in (None, 0) or accumulate not in (None, 1):
        key = "gradient_clip_val" if clip not in (None, 0) else "accumulate_grad_batches"
        raise ConfigError(
            f"trainer.{key}={cfg.trainer[key]} is not supported: aelab takes the optimiser "
            f"steps itself (steps_per_call), so Lightning does not clip or accumulate "
            f"gradients; remove trainer.{key}."
        )
    resume = cfg.get("resume", False)
    if not isinstance(resume, bool):
        raise ConfigError(f"resume={resume} must be true or false.")
