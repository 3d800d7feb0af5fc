"""Build the run's objects from a validated config: normalisation, loss, data, net, module.

`build` takes a `Validated` config (aelab.config.validate), or a plain one that it validates
first; what only the data can refuse (files, splits, a warm-up longer than the run) is
refused here, before any step.
"""

from __future__ import annotations

from dataclasses import dataclass

from omegaconf import DictConfig, OmegaConf

from aelab.config.validate import Validated, instantiate, validate
from aelab.data import ImageData
from aelab.data.normalization import Normalization
from aelab.doctor.preflight import check_before_training
from aelab.errors import ConfigError
from aelab.losses import ReconstructionLoss
from aelab.models import EncoderDecoder, Part, VariationalEncoder
from aelab.models.custom import build_custom
from aelab.training.module import Autoencoder, run_length
from aelab.training.schedulers import resolve


@dataclass
class Parts:
    normalization: Normalization
    loss: ReconstructionLoss
    data: ImageData
    net: EncoderDecoder
    module: Autoencoder


def build_net(cfg: DictConfig, image_shape: tuple[int, int, int], output: str) -> EncoderDecoder:
    """The encoder and decoder of `cfg.model` for images of `image_shape`, paired; a user's own
    modules (any `_target_` that is no aelab Part: model=custom) through ModuleAutoencoder."""
    activation = instantiate(cfg.activation)
    for part in ("encoder", "decoder"):
        if not OmegaConf.select(cfg.model, f"{part}._target_"):
            raise ConfigError(f"model.{part} is missing or has no _target_; choose a model "
                              f"preset (model=mlp, seed, conv or conv_mlp) or give model.{part}.")
    if not all(is_part(cfg.model[part]._target_) for part in ("encoder", "decoder")):
        return build_custom(cfg.model, image_shape, activation, output)  # type: ignore[return-value]
    encoder, decoder = (
        instantiate(cfg.model[part], image_shape=list(image_shape), activation=activation)
        for part in ("encoder", "decoder")
    )
    if cfg.model.get("variational", False):
        encoder = VariationalEncoder(encoder)
    return EncoderDecoder(encoder, decoder, output)


def is_part(target: str) -> bool:
    """Whether `target` names one of aelab's own encoder/decoder classes (a Part)."""
    from hydra.utils import get_object

    try:
        found = get_object(str(target))
    except Exception:  # not importable: build_custom says so
        return False
    return isinstance(found, type) and issubclass(found, Part)


def build(config: Validated | DictConfig) -> Parts:
    """Instantiate normalisation, loss, data (loaded), net and module; a plain config is
    validated first (`aelab.config.validate`)."""
    checked = config if isinstance(config, Validated) else validate(config)
    cfg = checked.cfg
    norm: Normalization = instantiate(cfg.normalization)
    loss: ReconstructionLoss = instantiate(cfg.loss)
    data: ImageData = instantiate(
        cfg.data, normalization=norm, seed=cfg.seed, steps_per_call=cfg.get("steps_per_call", 1)
    ).load()
    net = build_net(cfg, data.image_shape, checked.output_activation)
    instantiate(cfg.init)(net)
    preflight = check_before_training(loss, data, checked.output_activation)
    trainer = cfg.get("trainer") or {}
    scheduler = checked.scheduler
    if scheduler:  # refuse a schedule longer than the run now, not when fit starts
        resolve(scheduler, *run_length(len(data.splits["train"]), data.batch_size,
                                       trainer.get("accumulate_grad_batches") or 1,
                                       trainer.get("max_epochs"), trainer.get("max_steps", -1)))
    module = Autoencoder(
        net, loss, instantiate(cfg.optimizer), norm, cfg.get("l2_penalty", 0.0),
        scheduler=scheduler,
        gradient_clip_val=trainer.get("gradient_clip_val"),
        gradient_clip_algorithm=trainer.get("gradient_clip_algorithm") or "norm",
        accumulate_grad_batches=trainer.get("accumulate_grad_batches") or 1,
        vae=checked.vae,
    )
    module.preflight = preflight  # the Diagnostics callback puts it into metrics.json
    return Parts(norm, loss, data, net, module)
