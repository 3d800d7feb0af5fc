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


def _finite(value: Any) -> str:
    """The words to add for a number that is not finite (inf, nan); else nothing."""
    return f" and finite ({value} is not)" if _is_number(value) and not math.isfinite(value) \
        else ""


def _is_fraction(value: Any) -> bool:
    return isinstance(value, float) and 0 < value < 1


def check_val_size(value: Any) -> None:
    """data.val_size: a number of images (int > 0) or a fraction in (0, 1) of the train pool."""
    if value is not None and not ((_is_int(value) and value > 0) or _is_fraction(value)):
        raise ConfigError(
            f"data.val_size={value} must be a positive integer, or a fraction in (0, 1) of "
            f"the training images, e.g. data.val_size=5000 or data.val_size=0.1."
        )


def check_fraction(key: str, value: Any) -> None:
    """data.KEY: null or a fraction in (0, 1)."""
    if value is not None and not _is_fraction(value):
        raise ConfigError(f"data.{key}={value} must be a fraction in (0, 1), e.g. data.{key}=0.1.")


def data_size(value: Any) -> tuple[int, int] | None:
    """data.size as (H, W): null, one integer (square) or [H, W] of positive integers."""
    if value is None:
        return None
    if _is_int(value) and value > 0:
        return value, value
    if not isinstance(value, (str, bytes)) and hasattr(value, "__len__") and len(value) == 2:
        h, w = value[0], value[1]
        if _is_int(h) and _is_int(w) and h > 0 and w > 0:
            return h, w
    shown = list(value) if isinstance(value, ListConfig) else value
    raise ConfigError(
        f"data.size={shown} must be [H,W] of positive integers or one integer (square), "
        f"e.g. data.size=[32,32]."
    )


def data_channels(value: Any) -> int | None:
    """data.channels: null (as read), 1 (grey) or 3 (colour)."""
    if value is None or (_is_int(value) and value in (1, 3)):
        return value
    raise ConfigError(
        f"data.channels={value} must be 1 (grey), 3 (colour) or null (as the files are)."
    )


def check_config(cfg: DictConfig) -> None:
    """Refuse values that cannot train, naming the option to change and how."""
    lr = cfg.optimizer.get("lr")
    if lr is not None and not (_is_number(lr) and math.isfinite(lr) and lr > 0):
        raise ConfigError(
            f"optimizer.lr={lr} must be a positive number{_finite(lr)}, e.g. optimizer.lr=0.001."
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
    check_val_size(cfg.data.get("val_size"))
    check_fraction("test_fraction", cfg.data.get("test_fraction"))
    data_size(cfg.data.get("size"))
    data_channels(cfg.data.get("channels"))
    hidden = cfg.model.get("hidden")
    shown = list(hidden) if isinstance(hidden, ListConfig) else hidden
    if "hidden" in cfg.model and (  # model=mlp's widths; conv parts check their own settings
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
        raise ConfigError(f"l2_penalty={l2} must be a number >= 0{_finite(l2)} (0 turns it off).")
    seed = cfg.get("seed")
    if not (_is_int(seed) and 0 <= seed <= MAX_SEED):
        raise ConfigError(f"seed={seed} must be an integer in [0, {MAX_SEED}], e.g. seed=0.")
    threads = cfg.get("threads")
    if threads is not None and not (_is_int(threads) and threads > 0):
        raise ConfigError(f"threads={threads} must be a positive integer, or null.")
    steps = cfg.get("steps_per_call", 1)
    if not (_is_int(steps) and steps >= 1):
        raise ConfigError(f"steps_per_call={steps} must be an integer >= 1 (1: every step).")
    check_trainer(cfg.trainer, steps, cfg.get("callbacks") or {})
    resume = cfg.get("resume", False)
    if not isinstance(resume, bool):
        raise ConfigError(f"resume={resume} must be true or false.")


def check_trainer(trainer: DictConfig, steps_per_call: int, callbacks: Any) -> None:
    """Refuse Trainer settings aelab's manual-optimisation loop would get wrong, before training."""
    clip = trainer.get("gradient_clip_val")
    if clip is not None and not (_is_number(clip) and math.isfinite(clip) and clip >= 0):
        raise ConfigError(
            f"trainer.gradient_clip_val={clip} must be a number >= 0{_finite(clip)}, or null."
        )
    algorithm = trainer.get("gradient_clip_algorithm")
    if algorithm not in (None, "norm", "value"):
        raise ConfigError(f"trainer.gradient_clip_algorithm={algorithm} must be norm or value.")
    accumulate = trainer.get("accumulate_grad_batches")
    if accumulate is not None and not (_is_int(accumulate) and accumulate >= 1):
        raise ConfigError(
            f"trainer.accumulate_grad_batches={accumulate} must be an integer >= 1 (1: off)."
        )
    devices, strategy = trainer.get("devices", 1), str(trainer.get("strategy", "auto"))
    fixes = [] if devices in (1, "1", [0]) else [(f"trainer.devices={devices}",
                                                 "set trainer.devices=1")]
    if "ddp" in strategy or "fsdp" in strategy:
        fixes.append((f"trainer.strategy={strategy}", f"remove +trainer.strategy={strategy} "
                      f"(or set trainer.strategy=auto)"))
    if fixes:
        raise ConfigError(
            f"{' '.join(name for name, _ in fixes)}: aelab trains one run on one device (its "
            f"batches are slices of one in-memory tensor, with no distributed sampler); "
            f"{' and '.join(fix for _, fix in fixes)}, and run many runs at once with a sweep "
            f"launcher (README, Sweeps)."
        )
    if steps_per_call == 1:
        return
    interval = trainer.get("val_check_interval")
    if interval is not None and interval != 1.0:
        raise ConfigError(
            f"trainer.val_check_interval={interval} counts Lightning batches, each of which "
            f"holds steps_per_call={steps_per_call} optimiser steps; set steps_per_call=1 "
            f"to validate within an epoch."
        )
    for name, node in (callbacks.items() if hasattr(callbacks, "items") else []):
        every = node.get("every_n_train_steps") if hasattr(node, "get") else None
        if every:
            raise ConfigError(
                f"callbacks.{name}.every_n_train_steps={every}: the global step moves by "
                f"steps_per_call={steps_per_call} per Lightning batch, so the callback would "
                f"miss steps; set steps_per_call=1."
            )


def trainer_refusal(trainer: DictConfig, exc: Exception) -> str:
    """The refusal for trainer options that lightning.Trainer rejects: Lightning's first line,
    then the option to change: trainer.accelerator when it names a device this machine lacks,
    else the trainer.* options set away from conf/trainer/default.yaml."""
    from omegaconf import OmegaConf

    from aelab.config import CONFIG_DIR

    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    accelerator = str(trainer.get("accelerator", "auto"))
    if accelerator not in ("auto", "cpu") and not _available(accelerator):
        fix = (f"trainer.accelerator={accelerator} asks for a device this machine does not "
               f"have; use trainer.accelerator=auto (the GPU when there is one, else the CPU) "
               f"or trainer.accelerator=cpu.")
    else:
        defaults = OmegaConf.load(f"{CONFIG_DIR}/trainer/default.yaml")
        changed = [f"trainer.{k}={v}" for k, v in trainer.items()
                   if k not in defaults or defaults.get(k) != v]
        fix = (f"change the one it refers to among those set away from "
               f"conf/trainer/default.yaml: {', '.join(changed)}." if changed else
               "see conf/trainer/default.yaml.")
    return f"trainer: Lightning refuses these trainer options ({first}); {fix}"


def _available(accelerator: str) -> bool:
    """Whether Lightning finds `accelerator` (gpu: CUDA or MPS) on this machine; True for a
    name it does not know (its own message says so)."""
    from lightning.pytorch.accelerators import AcceleratorRegistry

    names = ("cuda", "mps") if accelerator == "gpu" else (accelerator,)
    known = [n for n in names if n in AcceleratorRegistry]
    if not known:
        return True
    try:
        return any(AcceleratorRegistry[n]["accelerator"].is_available() for n in known)
    except Exception:  # a missing package (torch_xla): not available
        return False
