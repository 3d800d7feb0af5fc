"""`python -m aelab [overrides]`: one run, or a sweep with -m. Imports no torch until it trains."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

CONFIG_DIR = str(Path(__file__).resolve().parent.parent / "conf")


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="config")
def main(cfg: DictConfig) -> float | None:
    from aelab.errors import AelabError
    from aelab.train import run

    hydra_cfg = HydraConfig.get()
    try:
        result = run(cfg, choices=dict(hydra_cfg.runtime.choices))
    except AelabError as exc:
        logging.getLogger("aelab").error("%s", exc)
        if hydra_cfg.mode == RunMode.MULTIRUN:
            raise
        print(f"aelab: error: {exc}", file=sys.stderr)
        sys.exit(2)
    return result["test"].get("mse")


if __name__ == "__main__":
    main()
