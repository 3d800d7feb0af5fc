"""Compose the run config in Python as `python -m aelab <overrides>` would."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, OmegaConf

# inside the package (a link to the top-level conf/ in the source tree, files in a wheel)
CONFIG_DIR = str(Path(__file__).resolve().parent.parent / "conf")


def compose_config(overrides: list[str], output_dir: str | Path) -> DictConfig:
    """The composed config for `overrides`, with its run folder at `output_dir`."""
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return compose("config", overrides=[*overrides, f"paths.output_dir={output_dir}"])


def plain_without(cfg: DictConfig, keys: tuple[str, ...], resolve: bool) -> dict[str, Any]:
    """`cfg` as plain containers, without the dotted `keys` (a missing key is fine)."""
    plain = OmegaConf.to_container(cfg, resolve=resolve, throw_on_missing=False)
    assert isinstance(plain, dict)
    for key in keys:
        *parents, leaf = key.split(".")
        node: Any = plain
        for part in parents:
            node = node.get(part) if isinstance(node, dict) else None
        if isinstance(node, dict):
            node.pop(leaf, None)
    return plain
