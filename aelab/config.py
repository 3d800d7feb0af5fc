"""Compose the run config in Python as `python -m aelab <overrides>` would."""

from __future__ import annotations

from pathlib import Path

from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

# inside the package (a link to the top-level conf/ in the source tree, files in a wheel)
CONFIG_DIR = str(Path(__file__).resolve().parent / "conf")


def compose_config(overrides: list[str], output_dir: str | Path) -> DictConfig:
    """The composed config for `overrides`, with its run folder at `output_dir`."""
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return compose("config", overrides=[*overrides, f"paths.output_dir={output_dir}"])
