"""The net of a config: its encoder and decoder for images of a given shape (no data needed);
a user's own modules (model=custom) through aelab.models.custom."""

from __future__ import annotations

from omegaconf import DictConfig, OmegaConf

from aelab.config.validate import instantiate
from aelab.errors import ConfigError
from aelab.models import EncoderDecoder, Part, VariationalEncoder
from aelab.models.custom import build_custom


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
