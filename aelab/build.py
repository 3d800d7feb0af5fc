"""Build the run's objects from the config and check that they fit together."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from hydra.errors import InstantiationException
from hydra.utils import instantiate as hydra_instantiate
from omegaconf import DictConfig, OmegaConf

from aelab.data import ImageData
from aelab.domains import covers, describe
from aelab.errors import AelabError, ConfigError
from aelab.losses import ReconstructionLoss
from aelab.module import Autoencoder, VAESettings, run_length
from aelab.nets import (
    OUTPUT_ACTIVATIONS,
    EncoderDecoder,
    VariationalEncoder,
    auto_output_activation,
)
from aelab.normalization import Normalization
from aelab.schedulers import resolve

UNIT_NORMALIZATIONS = "normalization=unit, binary, stochastic_binary or dequantized"


def instantiate(config: Any, **kwargs: Any) -> Any:
    """Hydra's instantiate, re-raising aelab's own refusals unwrapped (one form for all)."""
    try:
        return hydra_instantiate(config, **kwargs)
    except InstantiationException as exc:
        if isinstance(exc.__cause__, AelabError):
            raise exc.__cause__ from None
        raise


@dataclass
class Parts:
    normalization: Normalization
    loss: ReconstructionLoss
    data: ImageData
    net: EncoderDecoder
    module: Autoencoder


def check_compatible(
    loss: ReconstructionLoss, norm: Normalization, output: str, allow_out_of_range: bool = False
) -> None:
    """Refuse a loss whose targets, or an output activation whose values, cannot meet the data.

    `allow_out_of_range` (allow_out_of_range_targets=true) waives both range checks, so
    that mismatches such as BCE on standardised data (docs/QUESTION.md H8) can be run on purpose.
    """
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


def build_net(cfg: DictConfig, image_shape: tuple[int, int, int], output: str) -> EncoderDecoder:
    """The encoder and decoder of `cfg.model` for images of `image_shape`, paired."""
    activation = instantiate(cfg.activation)
    for part in ("encoder", "decoder"):
        if not OmegaConf.select(cfg.model, f"{part}._target_"):
            raise ConfigError(f"model.{part} is missing or has no _target_; choose a model "
                              f"preset (model=mlp, seed, conv or conv_mlp) or give model.{part}.")
    encoder, decoder = (
        instantiate(cfg.model[part], image_shape=list(image_shape), activation=activation)
        for part in ("encoder", "decoder")
    )
    if cfg.model.get("variational", False):
        encoder = VariationalEncoder(encoder)
    return EncoderDecoder(encoder, decoder, output)


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def vae_settings(cfg: DictConfig, loss: ReconstructionLoss) -> VAESettings | None:
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


def build(cfg: DictConfig) -> Parts:
    """Instantiate normalisation, loss, data (loaded), net and module; raise AelabError early."""
    norm: Normalization = instantiate(cfg.normalization)
    loss: ReconstructionLoss = instantiate(cfg.loss)
    output = cfg.model.output_activation
    if output == "auto":  # the loss's own output activation if it assumes one, else the targets'
        output = loss.output_activation or auto_output_activation(norm.target_range)
    if output not in OUTPUT_ACTIVATIONS:
        raise ConfigError(
            f"model.output_activation={output!r} is unknown; choose auto or one of "
            f"{', '.join(OUTPUT_ACTIVATIONS)}."
        )
    check_compatible(loss, norm, output, cfg.get("allow_out_of_range_targets", False))
    vae = vae_settings(cfg, loss)
    data: ImageData = instantiate(
        cfg.data, normalization=norm, seed=cfg.seed, steps_per_call=cfg.get("steps_per_call", 1)
    ).load()
    net = build_net(cfg, data.image_shape, output)
    instantiate(cfg.init)(net)
    trainer = cfg.get("trainer") or {}
    scheduler = OmegaConf.to_container(cfg.scheduler) if cfg.get("scheduler") else None
    if scheduler:  # refuse a schedule that cannot work now, not when fit starts
        resolve(scheduler, *run_length(len(data.splits["train"]), data.batch_size,
                                       trainer.get("accumulate_grad_batches") or 1,
                                       trainer.get("max_epochs"), trainer.get("max_steps", -1)))
    module = Autoencoder(
        net, loss, instantiate(cfg.optimizer), norm, cfg.get("l2_penalty", 0.0),
        scheduler=scheduler,
        gradient_clip_val=trainer.get("gradient_clip_val"),
        gradient_clip_algorithm=trainer.get("gradient_clip_algorithm") or "norm",
        accumulate_grad_batches=trainer.get("accumulate_grad_batches") or 1,
        vae=vae,
    )
    return Parts(norm, loss, data, net, module)
