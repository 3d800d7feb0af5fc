"""Build the run's objects from a validated config: normalisation, loss, data, net, module.

`build` takes a `Validated` config (aelab.config.validate), or a plain one that it validates
first; what only the data can refuse (files, splits, a warm-up longer than the run) is
refused here, before any step.
"""

from __future__ import annotations

from dataclasses import dataclass

from omegaconf import DictConfig

from aelab.config.validate import Validated, instantiate, validate
from aelab.data import ImageData
from aelab.data.normalization import Normalization
from aelab.doctor.preflight import check_before_training
from aelab.losses import ReconstructionLoss
from aelab.models import EncoderDecoder
from aelab.training.module import Autoencoder, run_length
from aelab.training.nets import build_net
from aelab.training.schedulers import resolve

__all__ = ["Parts", "build", "build_net"]


@dataclass
class Parts:
    normalization: Normalization
    loss: ReconstructionLoss
    data: ImageData
    net: EncoderDecoder
    module: Autoencoder


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
