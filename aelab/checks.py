"""Checks of the composed config that need no torch: run before anything is built."""

from __future__ import annotations

from omegaconf import DictConfig

from aelab.errors import ConfigError


def check_config(cfg: DictConfig) -> None:
    """Refuse values that cannot train, naming the option to change."""
    lr = cfg.optimizer.get("lr")
    if lr is not None and not lr > 0:
        raise ConfigError(f"optimizer.lr={lr} must be positive.")
    for key in ("batch_size", "eval_batch_size"):
        value = cfg.data.get(key)
        if value is not None and not (isinstance(value, int) and value > 0):
            raise ConfigError(f"data.{key}={value} must be a positive integer.")
    hidden = cfg.model.hidden
    if not hidden or any(not isinstance(w, int) or w <= 0 for w in hidden):
        raise ConfigError(
            f"model.hidden={list(hidden) if hidden else hidden} must be a "
            f"non-empty list of positive integers, e.g. model.hidden=[100,50]."
        )
    epochs = cfg.trainer.get("max_epochs")
    if epochs is not None and not (isinstance(epochs, int) and epochs >= 1):
        raise ConfigError(f"trainer.max_epochs={epochs} must be an integer >= 1.")
    if cfg.get("l2_penalty", 0) < 0:
        raise ConfigError(f"l2_penalty={cfg.l2_penalty} must be >= 0.")
