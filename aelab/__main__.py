"""`python -m aelab [overrides]`: one run, or a sweep with -m. Imports no torch until it trains.

Exit codes of a single run: 0 completed (or skipped by resume=true: same settings only),
2 refused input (`aelab: error: ...` printed once; a folder that holds a run, or that cannot
be written, is left byte for byte as it was), 3 diverged (metrics.json says so), 130/143
interrupted by SIGINT/SIGTERM (resumable), 1 a crash (traceback; status "failed") or a run
folder that became unwritable while it trained (one `aelab: error:` line; its last.ckpt
kept). A misspelt group option or key (`loss.reducton=sum`) exits 2 with the options or
"did you mean"; a key that no file has, without a close match, is Hydra's to refuse (1); a
key added with `+` that nothing reads is refused by aelab: 2. In a multirun every job
records its status in its metrics.json and the sweep goes on; a job whose folder is not its
to write (aelab.errors.RunFolderError) records nothing there; the sweep exits 1 when a run
failed, 2 when runs were refused and left as they were (see aelab.sweeps.outcome), 0 when
every run completed or diverged.
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
# Hydra's flags that print and run nothing: no output folder to check
INFO_FLAGS = ("--help", "-h", "--hydra-help", "--cfg", "-c", "--info", "-i",
              "--shell-completion", "-sc", "--version")


def _log_sizes() -> dict[Path, int]:
    """The size of each file the logging handlers write to, as the run starts."""
    sizes = {}
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.FileHandler):
            path = Path(handler.baseFilename)
            sizes[path] = path.stat().st_size if path.is_file() else 0
    return sizes


def _restore_logs(exc: Exception, logs: dict[Path, int]) -> None:
    """Cut the log files back to their size as the run started: a log that held an earlier
    run's lines is left byte for byte as it was; a new one keeps nothing but the refusal."""
    for handler in logging.getLogger().handlers:
        handler.flush()
    for path, size in logs.items():
        try:
            if path.is_file():
                os.truncate(path, size)
                if size == 0:
                    with open(path, "a", encoding="utf-8") as f:
                        f.write(f"aelab: error: {exc}\n")
        except OSError:  # a folder that cannot be written: its log is as it was
            pass


def _refuse(exc: Exception, logs: dict[Path, int]) -> NoReturn:
    """Print a refusal once and exit 2; the log files are cut back to their size before it."""
    logging.shutdown()  # flush and close the handlers before touching their files
    _restore_logs(exc, logs)
    print(f"aelab: error: {exc}", file=sys.stderr)
    sys.exit(EXIT_REFUSED)


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="config")
def main(cfg: DictConfig) -> float | None:
    from aelab.errors import AelabError, FolderNotWritable, RunFolderError
    from aelab.sweeps.outcome import note_refused
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
        if isinstance(exc, FolderNotWritable) and exc.mid_run:
            print(f"aelab: error: {exc}", file=sys.stderr)  # nothing could be recorded
            if multirun:  # its folder holds no new metrics.json: the sweep counts it failed
                return None
            sys.exit(1)
        if not multirun:
            _refuse(exc, logs)
        # not this run's folder to record in: noted, the sweep goes on and then exits 2
        _refuse_in_sweep(exc, logs)
        note_refused(Path(hydra_cfg.sweep.dir), Path(cfg.paths.output_dir), str(exc))
        return None
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


def _refuse_in_sweep(exc: Exception, logs: dict[Path, int]) -> None:
    """A sweep job's refusal: printed once (not logged into the folder's log), the logs cut
    back to their size, the sweep goes on."""
    _restore_logs(exc, logs)
    print(f"aelab: error: {exc}", file=sys.stderr)


def unknown_option(args: list[str], config_dir: Path = Path(CONFIG_DIR)) -> str | None:
    """The refusal for a `group=option` argument naming no file of that group, or for a
    `trainer.X=` that conf/trainer/default.yaml lacks (it needs `+trainer.X=`); else None.

    Checked before Hydra composes, so these exit 2 with the options or the fix.
    """
    from aelab.config.keys import misspelt_override

    trainer = OmegaConf.load(config_dir / "trainer" / "default.yaml")
    for arg in args:
        if arg.startswith("trainer.") and "=" in arg:
            name = arg.partition("=")[0].removeprefix("trainer.")
            if name.split(".")[0] not in trainer:
                return _trainer_key(arg, name.split(".")[0], trainer)
        elif not arg.startswith("-") and (message := misspelt_override(arg)):
            return message
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


def _trainer_key(arg: str, name: str, trainer: DictConfig) -> str:
    """The refusal of `trainer.NAME=...`, a key conf/trainer/default.yaml lacks: a
    lightning.Trainer argument is added with a +; a misspelt one gets "did you mean"."""
    import difflib

    from aelab.config.keys import _parameters

    params = _parameters("lightning.Trainer") or frozenset()
    if name in params:
        return (f"{arg}: trainer.{name} is not in conf/trainer/default.yaml; add a "
                f"lightning.Trainer argument it lacks with a +: +{arg}")
    close = difflib.get_close_matches(name, sorted({*trainer, *params} - {"self"}), n=1)
    meant = f" (did you mean trainer.{close[0]}?)" if close else ""
    return f"{arg}: trainer.{name} is no argument of lightning.Trainer{meant}."


def cli() -> None:
    """`python -m aelab`: refuse a misspelt group option or key and an output folder that
    cannot be written (exit 2, before Hydra makes or logs anything), then run Hydra's main."""
    from aelab.errors import FolderNotWritable
    from aelab.training.folder import check_writable

    args = sys.argv[1:]
    message = unknown_option(args)
    try:
        if not any(a.split("=")[0] in INFO_FLAGS for a in args):  # not --help, --cfg, ...
            check_writable(output_root(args))
    except FolderNotWritable as exc:
        message = message or str(exc)
    if message:
        print(f"aelab: error: {message}", file=sys.stderr)
        sys.exit(EXIT_REFUSED)
    main()


def output_root(args: list[str]) -> Path:
    """The folder a run (hydra.run.dir) or a sweep (-m: hydra.sweep.dir) writes into, up to
    its first interpolation (${now:...}); `outputs` when the command names none (every
    default folder of conf/hydra/default.yaml and sweeps/ lies there)."""
    multirun = any(a in ("-m", "--multirun") for a in args)
    key = "hydra.sweep.dir=" if multirun else "hydra.run.dir="
    given = [a.lstrip("+").removeprefix(key) for a in args if a.lstrip("+").startswith(key)]
    folder = given[-1].strip("'\"") if given else "outputs"
    if "${" in folder:
        folder = folder.split("${", 1)[0].rpartition("/")[0] or "."
    return Path(folder)


if __name__ == "__main__":
    cli()
