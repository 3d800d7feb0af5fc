"""`python -m aelab [overrides]`: one run, or a sweep with -m. Imports no torch until it trains.

Exit codes of a single run: 0 completed (or skipped by resume=true), 2 refused input
(`aelab: error: ...` printed once; a folder that holds a run is left byte for byte as it
was), 3 diverged (metrics.json says so),
130/143 interrupted by SIGINT/SIGTERM (resumable), 1 a crash (traceback; status "failed"),
and Hydra's own 1 for an unknown key (a misspelt group option exits 2 and lists the group's
options; a key added with `+` that nothing reads is refused by aelab: 2). In a multirun every
job records its
status in its metrics.json and the sweep goes on; the sweep exits 1 when a run failed
(see aelab.sweeps.outcome.SweepOutcome), 0 when every run completed or diverged.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import NoReturn

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from aelab.config import CONFIG_DIR

EXIT_REFUSED = 2
EXIT_DIVERGED = 3


def _log_sizes() -> dict[Path, int]:
    """The size of each file the logging handlers write to, as the run starts."""
    sizes = {}
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.FileHandler):
            path = Path(handler.baseFilename)
            sizes[path] = path.stat().st_size if path.is_file() else 0
    return sizes


def _refuse(exc: Exception, logs: dict[Path, int]) -> NoReturn:
    """Print a refusal once and exit 2; the log files are cut back to their size before it.

    A log that held an earlier run's lines is left byte for byte as it was; a new one keeps
    nothing but the refusal line.
    """
    logging.shutdown()  # flush and close the handlers before touching their files
    for path, size in logs.items():
        if path.is_file():
            os.truncate(path, size)
            if size == 0:
                with open(path, "a", encoding="utf-8") as f:
                    f.write(f"aelab: error: {exc}\n")
    print(f"aelab: error: {exc}", file=sys.stderr)
    sys.exit(EXIT_REFUSED)


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="config")
def main(cfg: DictConfig) -> float | None:
    from aelab.errors import AelabError, RunFolderError
    from aelab.training.run import run

    log = logging.getLogger("aelab")
    hydra_cfg = HydraConfig.get()
    multirun = hydra_cfg.mode == RunMode.MULTIRUN
    logs = _log_sizes()
    try:
        result = run(
            cfg,
            choices=dict(hydra_cfg.runtime.choices),
            overrides=list(hydra_cfg.overrides.task),
            record_refusal=multirun,
        )
    except RunFolderError as exc:
        if multirun:
            log.error("%s", exc)
            raise  # not this run's folder to record in: Hydra reports it after the sweep
        _refuse(exc, logs)
    except AelabError as exc:
        if multirun:
            log.error("%s", exc)
            return None  # recorded ("refused" or "failed") in its metrics.json; the sweep goes on
        _refuse(exc, logs)
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


def unknown_option(args: list[str], config_dir: Path = Path(CONFIG_DIR)) -> str | None:
    """The refusal for a `group=option` argument naming no file of that group, or for a
    `trainer.X=` that conf/trainer/default.yaml lacks (it needs `+trainer.X=`); else None.

    Checked before Hydra composes, so these exit 2 with the options or the fix.
    """
    trainer = OmegaConf.load(config_dir / "trainer" / "default.yaml")
    for arg in args:
        if arg.startswith("trainer.") and "=" in arg:
            name = arg.partition("=")[0].removeprefix("trainer.")
            if name.split(".")[0] not in trainer:
                return (
                    f"{arg}: trainer.{name} is not in conf/trainer/default.yaml; add a "
                    f"lightning.Trainer argument it lacks with a +: +{arg}"
                )
        key, sep, value = arg.lstrip("+").partition("=")
        group = config_dir / key
        if not sep or key.startswith(("hydra", "~")) or not group.is_dir():
            continue
        if any(c in value for c in "()[]{}$") or value in ("null", ""):
            continue  # a sweep function, a list or an interpolation: Hydra's to read
        options = sorted(p.stem for p in group.glob("*.yaml"))
        wrong = [v for v in value.split(",") if v not in options]
        if wrong:
            return (
                f"{key}={wrong[0]}: no such {key} option; the {key} options are: "
                f"{', '.join(options)} (files in conf/{key}/)."
            )
    return None


def cli() -> None:
    """`python -m aelab`: refuse a misspelt group option (exit 2), then run Hydra's main."""
    message = unknown_option(sys.argv[1:])
    if message:
        print(f"aelab: error: {message}", file=sys.stderr)
        sys.exit(EXIT_REFUSED)
    main()


if __name__ == "__main__":
    cli()
