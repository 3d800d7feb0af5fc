"""Load a trained model from its run folder or its `last.ckpt`: `aelab.load(run)`.

A checkpoint is self-contained: it records the settings that trained it (the RunRecord
callback's config, the run's resolved config without logger, callbacks and paths), the image
shape and the normalisation's statistics (the `aelab` entry the module adds; see
Autoencoder.on_save_checkpoint), so the net is rebuilt without reading the data. A checkpoint
written before the `aelab` entry existed is rebuilt from its data (read once, as the run did).
Single and stacked runs, autoencoders and VAEs load alike. Nothing here imports the module
(aelab.training.module builds the Autoencoder from `module_arguments`).
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from aelab.config.validate import (
    RUN_RECORD_STATE,
    instantiate,
    output_activation,
    vae_settings,
)
from aelab.errors import CheckpointError
from aelab.training.folder import CHECKPOINT
from aelab.training.nets import build_net

STATE_KEY = "aelab"  # the checkpoint entry of the image shape and normalisation statistics


def checkpoint_file(path: str | Path) -> Path:
    """`path` itself when it is a file, else the `last.ckpt` of the run folder `path`."""
    path = Path(path).expanduser()
    ckpt = path if path.is_file() else path / CHECKPOINT
    if not ckpt.is_file():
        raise CheckpointError(
            f"{path} is neither a checkpoint nor a run folder holding {CHECKPOINT} (a run "
            f"writes it after its first epoch, unless callbacks.checkpoint=null)."
        )
    return ckpt


def read_trained(path: str | Path) -> tuple[dict[str, Any], DictConfig]:
    """(the checkpoint, read with weights_only=True, on the CPU; the config that trained it)."""
    import torch

    ckpt = checkpoint_file(path)
    try:
        checkpoint = torch.load(ckpt, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise CheckpointError(f"{ckpt} cannot be loaded ({first}).") from None
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        raise CheckpointError(f"{ckpt} is not an aelab checkpoint (no state_dict).")
    record = (checkpoint.get("callbacks") or {}).get(RUN_RECORD_STATE) or {}
    if record.get("config"):
        return checkpoint, OmegaConf.create(record["config"])
    saved = ckpt.parent / ".hydra" / "config.yaml"
    if not saved.is_file():
        raise CheckpointError(f"{ckpt} records no config and {saved} is missing: the settings "
                              f"that trained it are unknown.")
    return checkpoint, OmegaConf.load(saved)


def read_data(cfg: DictConfig, normalization: Any = None, **options: Any) -> Any:
    """The run's data (aelab.data.ImageData), loaded and normalised as the run's; `options`
    replace data.* settings (e.g. root= where the data lives on this machine)."""
    data_cfg = OmegaConf.merge(cfg.data, options)
    norm = normalization if normalization is not None else instantiate(cfg.normalization)
    return instantiate(data_cfg, normalization=norm, seed=cfg.get("seed", 0),
                       steps_per_call=1).load()


def module_arguments(cfg: DictConfig, checkpoint: dict[str, Any]) -> dict[str, Any]:
    """The Autoencoder's constructor arguments for the run of `cfg`: its net (not trained:
    the checkpoint's state_dict holds the weights), loss, optimizer, normalisation (its
    statistics restored) and VAE settings."""
    loss = instantiate(cfg.loss)
    norm = instantiate(cfg.normalization)
    state = checkpoint.get(STATE_KEY) or {}
    if "image_shape" in state:
        shape = tuple(int(s) for s in state["image_shape"])
        norm.load_state_dict(state.get("normalization") or {})
    else:  # an older checkpoint: the data tells the shape and fits the statistics
        shape = read_data(cfg, norm).image_shape
    net = build_net(cfg, shape, output_activation(cfg, loss, norm))
    return {"net": net, "loss": loss, "optimizer": instantiate(cfg.optimizer),
            "normalization": norm, "l2_penalty": cfg.get("l2_penalty", 0.0),
            "vae": vae_settings(cfg, loss)}


def load_data(path: str | Path, **options: Any) -> Any:
    """The data of the run at `path` (a run folder or its checkpoint), as it trained on:
    `.splits["train"|"val"|"test"]` hold the normalised images, flat (N, C*H*W), and
    `.image_shape` their (C, H, W). `options` replace data.* settings, e.g.
    `root="/data"` where the data lives on this machine."""
    _, cfg = read_trained(path)
    return read_data(cfg, **options)
