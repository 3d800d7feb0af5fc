"""The net of a config: its encoder and decoder for images of a given shape (no data needed)."""

from __future__ import annotations

from omegaconf import DictConfig, OmegaConf

from aelab.config.validate import instantiate
from aelab.errors import ConfigError
from aelab.models import EncoderDecoder, VariationalEncoder


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
