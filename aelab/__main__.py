"""`python -m aelab [overrides]`: one run, or a sweep with -m. Imports no torch until it trains.

Exit codes of a single run: 0 completed (or skipped by resume=true), 2 refused input
(`aelab: error: ...`, nothing written but the log), 3 diverged (metrics.json says so),
130/143 interrupted by SIGINT/SIGTERM (resumable), 1 a crash (traceback; status "failed"),
and Hydra's own 1 for an unknown key or option (a key added with `+` that nothing
reads is refused by aelab: 2). In a multirun every job records its
status in its metrics.json and the sweep goes on; the sweep exits 1 when a run failed
(see aelab.outcome.SweepOutcome), 0 when every run completed or diverged.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

CONFIG_DIR = str(Path(__file__).resolve().parent.parent / "conf")

EXIT_REFUSED = 2
EXIT_DIVERGED = 3


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="config")
def main(cfg: DictConfig) -> float | None:
    from aelab.errors import AelabError, RunFolderError
    from aelab.train import run

    log = logging.getLogger("aelab")
    hydra_cfg = HydraConfig.get()
    multirun = hydra_cfg.mode == RunMode.MULTIRUN
    try:
        result = run(
            cfg,
            choices=dict(hydra_cfg.runtime.choices),
            overrides=list(hydra_cfg.overrides.task),
            record_refusal=multirun,
        )
    except RunFolderError as exc:
        log.error("%s", exc)
        if multirun:
            raise  # not this run's folder to record in: Hydra reports it after the sweep
        print(f"aelab: error: {exc}", file=sys.stderr)
        sys.exit(EXIT_REFUSED)
    except AelabError as exc:
        log.error("%s", exc)
        if multirun:
            return None  # recorded ("refused" or "failed") in its metrics.json; the sweep goes on
        print(f"aelab: error: {exc}", file=sys.stderr)
        sys.exit(EXIT_REFUSED)
    except Exception:
        if multirun:  # recorded as "failed" in its metrics.json; the sweep goes on
            log.exception("run failed; recorded in %s/metrics.json", cfg.paths.output_dir)
            return None
        raise
    if result.get("status") == "diverged":
        if multirun:
            return None
        print(f"aelab: {result['error']}", file=sys.stderr)
        sys.exit(EXIT_DIVERGED)
    return (result.get("test") or {}).get("mse")


if __name__ == "__main__":
    main()
