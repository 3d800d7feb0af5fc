"""`python -m aelab.stacked [overrides] [stack=N] [stack_conv=true]`: a sweep, its runs stacked.

Takes the arguments of `python -m aelab -m` (a `+sweep=NAME` file, comma lists, hydra.sweep.dir)
and plans the same runs, in the same folders (`aelab.sweeps.plan_runs`). Runs that can share
a model (aelab.stacked.plan) are trained in groups of at most `stack` (default 8) as one
StackedMLP each (aelab.stacked.group); the others run one after another as
`python -m aelab` runs them. The plan is printed before anything trains. `resume=true` skips
finished runs and continues an unfinished run with a last.ckpt alone.

Exit codes: 2 refused input (stack < 1, no run that can be stacked, two runs sharing a
folder, a sweep folder that cannot be written) before anything is written; otherwise as a
multirun (aelab.sweeps.outcome): 1 when a run failed, 2 when runs were refused and left as
they were (a finished run of other settings under resume=true), 0 when every run completed
or diverged; 130 on SIGINT and 143 on SIGTERM, with one line (the runs still training are
recorded "interrupted"; resume=true continues each from its last.ckpt).
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any, NamedTuple

from omegaconf import DictConfig, OmegaConf, open_dict

from aelab.config import CONFIG_DIR
from aelab.errors import AelabError, ConfigError

log = logging.getLogger("aelab")
DEFAULT_STACK = 8
Job = tuple[DictConfig, dict[str, str], list[str]]  # (config, choices, overrides) of one run


def parse_stack_conv(value: Any) -> bool | None:
    """stack_conv=true|false|null (auto: the measured rule, aelab.stacked.plan.stacks_any_net)."""
    text = str(value).strip().lower()
    if value is None or text in ("null", "none", "auto", ""):
        return None
    if isinstance(value, bool) or text in ("true", "false"):
        return value if isinstance(value, bool) else text == "true"
    raise ConfigError(f"stack_conv={value} must be true, false or null (auto: stack conv and "
                      f"VAE runs on a GPU only).")


def split_args(args: list[str]) -> tuple[int, list[str], list[str]]:
    """(stack, task overrides, hydra.* overrides) of the command line."""
    return split_all_args(args)[:3]


def split_all_args(args: list[str]) -> tuple[int, list[str], list[str], bool | None]:
    """(stack, task overrides, hydra.* overrides, stack_conv) of the command line."""
    from aelab.stacked.plan import check_stack

    stack: Any = DEFAULT_STACK
    stack_conv = None
    task, hydra = [], []
    for arg in args:
        if arg.startswith("stack="):
            text = arg.partition("=")[2]
            try:
                stack = int(text)
            except ValueError:
                stack = text
        elif arg.startswith("stack_conv="):
            stack_conv = parse_stack_conv(arg.partition("=")[2])
        elif arg.lstrip("+").startswith("hydra."):
            hydra.append(arg)
        else:
            task.append(arg)
    return check_stack(stack), task, hydra, stack_conv


def _compose(overrides: list[str]) -> DictConfig:
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return compose("config", overrides=overrides, return_hydra_config=True)


class Sweep(NamedTuple):
    """What `python -m aelab -m ARGS` would launch: its folder, every run as (config, choices,
    overrides) with its run folder as paths.output_dir, and the keys it varies."""

    dir: Path
    jobs: list[Job]
    swept: set[str]


def plan_jobs(task: list[str], hydra: list[str]) -> Sweep:
    """The Sweep of the command line's task and hydra.* overrides."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    from aelab.sweeps import check_distinct, plan_runs

    parsed = OverridesParser.create().parse_overrides(task)
    fixed = [line for line, o in zip(task, parsed) if not o.is_sweep_override()]
    hcfg = _compose(fixed + hydra).hydra
    naming = hcfg.job.config.override_dirname
    exclude = list(naming.exclude_keys)
    params = OmegaConf.to_container(hcfg.sweeper.params, resolve=False) \
        if hcfg.sweeper.get("params") else {}
    runs = plan_runs(params, task, exclude, naming.item_sep, naming.kv_sep)
    lines = [f"{k}={v}" for k, v in params.items()] + task
    swept = {o.key_or_group for o in OverridesParser.create().parse_overrides(lines)
             if o.is_sweep_override()}
    check_distinct(runs, exclude)
    sweep_dir = Path(str(hcfg.sweep.dir))
    jobs = []
    for overrides, folder in runs:
        out_dir = sweep_dir / folder if folder else sweep_dir
        cfg = _compose([*overrides, *hydra, f"paths.output_dir='{out_dir}'"])
        choices = {k: v for k, v in cfg.hydra.runtime.choices.items()}
        with open_dict(cfg):
            del cfg["hydra"]
        jobs.append((cfg, choices, list(overrides)))
    return Sweep(sweep_dir, jobs, swept)


def refuse_run(sweep_dir: Path, cfg: DictConfig, exc: Exception) -> None:
    """A run whose folder is not its to write: printed once, noted for the sweep's outcome."""
    from aelab.sweeps.outcome import note_refused

    print(f"aelab: error: {exc}", file=sys.stderr, flush=True)
    note_refused(sweep_dir, Path(cfg.paths.output_dir), str(exc))


def _run_single(sweep_dir: Path, cfg: DictConfig, choices: dict[str, str],
                overrides: list[str], hydra_cfg: DictConfig | None = None) -> None:
    """One run as a multirun job runs it: its outcome is recorded, the sweep goes on.
    `hydra_cfg`: the job's Hydra config (under the Hydra launcher), made current first."""
    from aelab.errors import FolderNotWritable, RunFolderError
    from aelab.training.run import run

    if hydra_cfg is not None:
        from hydra.core.hydra_config import HydraConfig

        HydraConfig.instance().set_config(hydra_cfg)
    try:
        run(cfg, choices=choices, overrides=overrides, record_refusal=True)
    except RunFolderError as exc:
        if isinstance(exc, FolderNotWritable) and exc.mid_run:
            print(f"aelab: error: {exc}", file=sys.stderr, flush=True)
        else:
            refuse_run(sweep_dir, cfg, exc)
    except AelabError as exc:
        log.error("%s", exc)
    except Exception:
        log.exception("run failed; recorded in %s/metrics.json", cfg.paths.output_dir)


def train_sweep(sweep: Sweep, stack: int,
                hydra_cfgs: dict[str, DictConfig] | None = None,
                stack_conv: bool | None = None) -> None:
    """Plan the sweep's runs, print the plan, then train the stacked groups, the runs that
    cannot be stacked and the runs resumed from a checkpoint. `hydra_cfgs`: each run
    folder's Hydra job config, under the Hydra launcher (hydra/launcher=stacked);
    `stack_conv`: stack any net (true), MLPs only (false), or by the device (None)."""
    import torch

    from aelab.config.validate import check_resume
    from aelab.errors import RunFolderError
    from aelab.stacked.plan import check_stack, describe_plan, plan_groups
    from aelab.training.folder import CHECKPOINT, check_writable, finished, read_metrics

    check_stack(stack)
    check_writable(sweep.dir)
    todo, resumed = [], []
    for job in sweep.jobs:
        cfg = job[0]
        out_dir = Path(cfg.paths.output_dir)
        if cfg.get("resume") is True:
            if finished(read_metrics(out_dir), cfg.trainer.get("max_epochs")):
                try:  # skipped only when its settings are these
                    check_resume(cfg, out_dir)
                except RunFolderError as exc:
                    refuse_run(sweep.dir, cfg, exc)
                    continue
                log.info("resume=true: %s is finished; skipped.", out_dir)
                continue
            if (out_dir / CHECKPOINT).is_file():
                resumed.append(job)  # continues from its checkpoint, alone
                continue
        todo.append(job)
    plan = plan_groups([cfg for cfg, _, _ in todo], stack, torch.cuda.is_available(),
                       parse_stack_conv(stack_conv))
    if todo and not plan.groups:
        raise ConfigError(
            f"none of the {len(todo)} run(s) can be stacked ({plan.single[0][1]}); choose "
            f"model=mlp or seed, or run the sweep unstacked (python -m aelab -m ..., the "
            f"basic launcher)."
        )
    root = Path(sweep.dir).resolve()
    names = [str(Path(cfg.paths.output_dir).resolve().relative_to(root)) if root in
             Path(cfg.paths.output_dir).resolve().parents else cfg.paths.output_dir
             for cfg, _, _ in todo]
    text = describe_plan(plan, names, stack)
    if resumed:
        text += f"\n  resumed alone from last.ckpt: {len(resumed)} run(s)"
    print(text, flush=True)
    _train(plan, todo, resumed, sweep, hydra_cfgs or {})


def main(args: list[str]) -> int:
    """`python -m aelab.stacked ARGS`: the sweep, then its outcome's exit code."""
    from aelab.errors import stop_on_sigterm
    from aelab.sweeps.outcome import report_outcome, take_refusals

    stack, task, hydra, stack_conv = split_all_args(args)
    sweep = plan_jobs(task, hydra)
    take_refusals(sweep.dir)  # notes an interrupted sweep left
    with stop_on_sigterm():
        train_sweep(sweep, stack, stack_conv=stack_conv)
    line, text, code = report_outcome(sweep.dir)
    log.info("sweep %s: %s", sweep.dir, line)
    print(f"sweep {sweep.dir}: {line}", flush=True)
    if text:
        print(text, file=sys.stderr)
    return code


def _train(plan: Any, todo: list[Job], resumed: list[Job], sweep: Sweep,
           hydra_cfgs: dict[str, DictConfig]) -> None:
    from aelab.stacked.group import train_group

    swept = sweep.swept

    def alone(job: Job) -> None:
        _run_single(sweep.dir, *job, hydra_cfgs.get(str(job[0].paths.output_dir)))

    for n, group in enumerate(plan.groups, start=1):
        members = [todo[i] for i in group]
        log.info("stacked group %d/%d: %d runs", n, len(plan.groups), len(members))
        try:
            train_group(members, swept, hydra_cfgs)
        except AelabError as exc:  # refused while setting up, before any folder was written
            log.error("group %d cannot train stacked (%s); its runs run alone", n, exc)
            for job in members:
                alone(job)
        except Exception:
            log.exception("stacked group %d failed; recorded in its runs' metrics.json", n)
    for i, _ in plan.single:
        alone(todo[i])
    for job in resumed:
        alone(job)


INTERRUPTED = ("aelab: interrupted ({}); rerun the same command with resume=true to continue "
               "(each run from its last.ckpt)")


def interrupted_exit(exc: BaseException) -> SystemExit:
    """The one line and the exit code (130 SIGINT, 143 SIGTERM) of an interrupted sweep."""
    sigterm = not isinstance(exc, KeyboardInterrupt)
    print(INTERRUPTED.format("SIGTERM" if sigterm else "SIGINT"), file=sys.stderr, flush=True)
    return SystemExit(143 if sigterm else 130)


def cli() -> None:
    from aelab.errors import Interrupted

    if {"-h", "--help"} & set(sys.argv[1:]):
        print(__doc__)
        sys.exit(0)
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s][%(name)s] %(message)s")
    try:
        code = main(sys.argv[1:])
    except AelabError as exc:
        print(f"aelab: error: {exc}", file=sys.stderr)
        sys.exit(2)
    except (KeyboardInterrupt, Interrupted) as exc:
        raise interrupted_exit(exc) from None
    sys.exit(code)


if __name__ == "__main__":
    cli()
