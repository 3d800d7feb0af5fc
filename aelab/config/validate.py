"""One entry point that checks a composed config before anything is built: `validate`.

A run reads as compose -> validate -> build -> train -> record. `validate` runs every check
the config alone decides, in this order, and returns a `Validated` config or raises one
`ConfigError` (or `CheckpointError`) that names the option to change:

1. keys that no part of aelab reads (a typo added with `+`): `aelab.config.keys`;
2. values that cannot train (rates, sizes, seeds, trainer options): `aelab.config.checks`;
3. choices that cannot meet: a loss and the targets of the normalisation, the output
   activation and the targets, a VAE on a loss that is no likelihood, a scheduler's options,
   a logger's class, its options and its package (wandb);
4. resume: the folder's `last.ckpt` must come from the same settings (the fingerprint); a
   finished run without one, its `.hydra/config.yaml` (`ResumeMismatch`: nothing is written,
   not even in a multirun, and a finished run with other settings is not skipped).

What only the data can tell (files missing or unreadable, too few images for the splits, a
scheduler warm-up longer than the run) is refused by `aelab.training.build` once the data is
loaded, still before the first step. Steps 1-2 need no torch; 3-4 import the loss and
normalisation classes (cheap objects) and torch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from aelab.config.checks import check_config
from aelab.config.keys import check_keys
from aelab.config.resume import (
    check_checkpoint_config,
    check_record_config,
    fingerprint,
    read_checkpoint,
)
from aelab.errors import AelabError, ConfigError

CHECKPOINT = "last.ckpt"
RUN_RECORD_STATE = "RunRecord"  # the state key of aelab.training.callbacks.RunRecord
UNIT_NORMALIZATIONS = "normalization=unit, binary, stochastic_binary or dequantized"


@dataclass(frozen=True)
class VAESettings:
    """model.beta, model.kl_warmup_epochs, model.free_bits and model.iwae_samples."""

    beta: float = 1.0
    kl_warmup_epochs: float = 0.0
    free_bits: float = 0.0
    iwae_samples: int = 100


@dataclass(frozen=True)
class Validated:
    """A config that passed every check, with what the checks resolved."""

    cfg: DictConfig
    output_activation: str  # model.output_activation with `auto` resolved
    vae: VAESettings | None  # None: an autoencoder
    scheduler: dict[str, Any] | None
    fingerprint: dict[str, Any]  # the settings a checkpoint of this run records
    resume_from: Path | None = None  # a last.ckpt written by these same settings
    resume_step: int = 0


def instantiate(config: Any, **kwargs: Any) -> Any:
    """Hydra's instantiate, re-raising aelab's own refusals unwrapped (one form for all)."""
    from hydra.errors import InstantiationException
    from hydra.utils import instantiate as hydra_instantiate

    try:
        return hydra_instantiate(config, **kwargs)
    except InstantiationException as exc:
        if isinstance(exc.__cause__, AelabError):
            raise exc.__cause__ from None
        raise


def validate(cfg: DictConfig, out_dir: Path | None = None) -> Validated:
    """Every check of `cfg` (see the module docstring); `out_dir`: the run folder, whose
    `last.ckpt` a `resume=true` run must match."""
    check_keys(cfg)
    check_config(cfg)
    loss = instantiate(cfg.loss)
    norm = instantiate(cfg.normalization)
    output = output_activation(cfg, loss, norm)
    check_compatible(loss, norm, output, cfg.get("allow_out_of_range_targets", False))
    vae = vae_settings(cfg, loss)
    scheduler = check_scheduler(cfg)
    check_logger(cfg)
    resume_from, step = None, 0
    prints = fingerprint(cfg)
    if cfg.get("resume") is True and out_dir is not None:
        resume_from, step = check_resume(cfg, Path(out_dir))
    return Validated(cfg, output, vae, scheduler, prints, resume_from, step)


def check_resume(cfg: DictConfig, out_dir: Path) -> tuple[Path | None, int]:
    """(the last.ckpt to continue from, its global step) of a resume=true run in `out_dir`;
    ResumeMismatch when the folder's run, finished or not, has other settings."""
    from aelab.training.folder import FINISHED, read_metrics

    previous = read_metrics(out_dir) or {}
    status = previous.get("status") if previous.get("status") in FINISHED else None
    ckpt = out_dir / CHECKPOINT
    if ckpt.is_file():
        checkpoint = read_checkpoint(ckpt)
        check_checkpoint_config(ckpt, checkpoint, cfg, RUN_RECORD_STATE, status)
        return ckpt, int(checkpoint.get("global_step", 0))
    if status is not None:
        check_record_config(out_dir, cfg, status)
    return None, 0


def output_activation(cfg: DictConfig, loss: Any, norm: Any) -> str:
    """model.output_activation, `auto` resolved: the loss's own (a loss on logits assumes
    one), else the one whose range matches the targets."""
    from aelab.models import OUTPUT_ACTIVATIONS, auto_output_activation

    output = cfg.model.output_activation
    if output == "auto":
        output = loss.output_activation or auto_output_activation(norm.target_range)
    if output not in OUTPUT_ACTIVATIONS:
        raise ConfigError(
            f"model.output_activation={output!r} is unknown; choose auto or one of "
            f"{', '.join(OUTPUT_ACTIVATIONS)}."
        )
    return output


def check_compatible(loss: Any, norm: Any, output: str, allow_out_of_range: bool = False) -> None:
    """Refuse a loss whose targets, or an output activation whose values, cannot meet the data.

    `allow_out_of_range` (allow_out_of_range_targets=true) waives both range checks, so
    that mismatches such as BCE on standardised data (docs/QUESTION.md H8) can be run on purpose.
    """
    from aelab.data.domains import covers, describe
    from aelab.models import OUTPUT_ACTIVATIONS, auto_output_activation

    if not covers(loss.target_range, norm.target_range) and not allow_out_of_range:
        raise ConfigError(
            f"loss={loss.name} needs targets in {describe(loss.target_range)}, but "
            f"normalization={norm.name} gives targets in {describe(norm.target_range)}. "
            f"Use {UNIT_NORMALIZATIONS}, or a loss for any targets (loss=mse, l1, huber); "
            f"allow_out_of_range_targets=true runs it anyway."
        )
    if loss.output_activation and output != loss.output_activation:
        raise ConfigError(
            f"loss={loss.name} is computed from logits for a {loss.output_activation} output, "
            f"but model.output_activation={output}; set model.output_activation=auto."
        )
    out_range = OUTPUT_ACTIVATIONS[output][1]
    if not covers(out_range, norm.target_range) and not allow_out_of_range:
        raise ConfigError(
            f"model.output_activation={output} outputs values in {describe(out_range)} and "
            f"cannot reach the targets of normalization={norm.name}, in "
            f"{describe(norm.target_range)}; set model.output_activation=auto "
            f"({auto_output_activation(norm.target_range)}), or "
            f"allow_out_of_range_targets=true to run it anyway."
        )


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def vae_settings(cfg: DictConfig, loss: Any) -> VAESettings | None:
    """The VAE's settings from `cfg.model` (None: model.variational is false); refuse a loss
    that is not a likelihood (no ELBO) unless model.allow_non_likelihood=true."""
    model = cfg.model
    variational = model.get("variational", False)
    if not isinstance(variational, bool):
        raise ConfigError(f"model.variational={variational} must be true or false.")
    if not variational:
        return None
    if loss.likelihood is None and not model.get("allow_non_likelihood", False):
        raise ConfigError(
            f"model.variational=true needs a loss that is a negative log-likelihood (its ELBO "
            f"is -log p(x|z) + KL), but loss={loss.name} is not one; choose loss=bce, mse, "
            f"gaussian_nll or continuous_bernoulli, or set model.allow_non_likelihood=true to "
            f"train on it anyway (its ELBO is then not a bound on anything)."
        )
    beta, warmup = model.get("beta", 1.0), model.get("kl_warmup_epochs", 0)
    free_bits, k = model.get("free_bits", 0.0), model.get("iwae_samples", 100)
    for key, value in (("beta", beta), ("kl_warmup_epochs", warmup), ("free_bits", free_bits)):
        if not (_number(value) and math.isfinite(value) and value >= 0):
            raise ConfigError(f"model.{key}={value} must be a number >= 0.")
    if not (isinstance(k, int) and not isinstance(k, bool) and k >= 1):
        raise ConfigError(f"model.iwae_samples={k} must be an integer >= 1 (1: the ELBO).")
    return VAESettings(float(beta), float(warmup), float(free_bits), int(k))


def check_scheduler(cfg: DictConfig) -> dict[str, Any] | None:
    """The `scheduler` group as plain values, its name, interval and options checked (the
    run's length is the data's to tell: aelab.training.build checks a warm-up against it)."""
    from aelab.training.schedulers import check_options

    if not cfg.get("scheduler"):
        return None
    scheduler = OmegaConf.to_container(cfg.scheduler)
    assert isinstance(scheduler, dict)
    check_options(scheduler)
    return scheduler


LOGGER_OPTIONS = "logger=tensorboard, csv, wandb or none"


def check_logger(cfg: DictConfig) -> None:
    """Refuse a logger that cannot be made: a `_target_` that is no class, options its class
    does not take (e.g. TensorBoard's default_hp_metric left over after `logger._target_=`
    another class), or logger=wandb without the wandb package."""
    import importlib.util
    import inspect

    from hydra.utils import get_class

    logger = cfg.get("logger")
    if not logger:
        return
    target = logger.get("_target_")
    try:
        cls = get_class(str(target))
    except Exception:
        raise ConfigError(f"logger._target_={target} is not a class that can be imported; "
                          f"choose {LOGGER_OPTIONS}, or a Lightning logger class.") from None
    options = {k: v for k, v in logger.items() if not str(k).startswith("_")}
    try:
        inspect.signature(cls).bind(**options)
    except TypeError as exc:
        raise ConfigError(
            f"logger: {target} refuses these options ({exc}); remove the option with "
            f"~logger.<option>, or choose {LOGGER_OPTIONS}."
        ) from None
    if cls.__name__ == "WandbLogger" and importlib.util.find_spec("wandb") is None:
        raise ConfigError(
            "logger=wandb needs the wandb package: pip install 'aelab[wandb]' (or choose "
            "logger=tensorboard, csv or none)."
        )
