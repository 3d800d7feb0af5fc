"""Run folders of a sweep: plan them before anything runs, and refuse a sweep where two runs
would share one.

A multirun names each run's folder by its overrides (`hydra.sweep.subdir` is
`${hydra.job.override_dirname}`, without the keys `resume` and `sweep`), so a rerun of
the same command maps to the same folders. Two runs would share a folder when a value is
repeated (`seed=0,0`) or when they differ only in a key left out of the name
(`+sweep=a,b`), and a name longer than a file name may be (255 bytes) cannot be created;
`DistinctRunFolders`, a Hydra callback, stops such a sweep at its start with a message.
No torch is imported here.
"""

from __future__ import annotations

import itertools
import re
import sys
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from aelab.errors import ConfigError

UNIQUE_MARKERS = ("${hydra.job.num}", "${hydra.job.id}")
NAME_MAX = 255  # bytes in one file name on Linux and macOS file systems


def is_basic_sweeper(target: Any) -> bool:
    """Whether `hydra.sweeper._target_` is Hydra's basic sweeper (the one plan_runs mirrors)."""
    return str(target).rsplit(".", 1)[-1] == "BasicSweeper"


def sweep_jobs(lines: Sequence[str]) -> list[list[str]]:
    """The overrides of every job that Hydra's basic sweeper launches for the override
    `lines` (its sweep params as key=value first, then the command line): the cartesian
    product of the lists, a key's later line replacing its earlier one in place, through
    Hydra's public override parser (what BasicSweeper.split_arguments does)."""
    final: dict[str, list[str]] = {}
    for override in OverridesParser.create().parse_overrides(list(lines)):
        key = override.get_key_element()
        if override.is_sweep_override():
            if not override.is_discrete_sweep():
                raise ConfigError(f"{override.input_line}: the basic sweeper takes comma lists, "
                                  f"range() and choice() only")
            final[key] = [f"{key}={value}" for value in override.sweep_string_iterator()]
        else:
            final[key] = [f"{key}={override.get_value_element_as_str()}"]
    return [list(job) for job in itertools.product(*final.values())]


def override_dirname(overrides: Sequence[Override], exclude_keys: Iterable[str],
                     item_sep: str = ",", kv_sep: str = "=") -> str:
    """`hydra.job.override_dirname` of a job's parsed overrides, as Hydra names it: the
    input lines but the excluded keys', sorted, joined by item_sep, each "=" made kv_sep."""
    exclude = set(exclude_keys)
    lines = sorted(o.input_line for o in overrides if o.key_or_group not in exclude)
    return re.sub("[=]", kv_sep, item_sep.join(lines))


def plan_runs(
    params: Mapping[str, Any],
    overrides: Sequence[str],
    exclude_keys: Iterable[str] = ("resume", "sweep"),
    item_sep: str = ",",
    kv_sep: str = "=",
) -> list[tuple[list[str], str]]:
    """(overrides, folder name) of every run that Hydra's basic sweeper launches.

    `params` is `hydra.sweeper.params` (from a sweep file), `overrides` the command line's
    task overrides; a key on the command line replaces the same key in `params`.
    """
    lines = [f"{k}={v}" for k, v in params.items()] + list(overrides)
    parser, exclude = OverridesParser.create(), list(exclude_keys)
    return [(job, override_dirname(parser.parse_overrides(job), exclude, item_sep, kv_sep))
            for job in sweep_jobs(lines)]


def shared_folders(runs: Sequence[tuple[list[str], str]]) -> dict[str, list[int]]:
    """Folder name -> the numbers of the runs that would write to it, for names used twice."""
    seen: dict[str, list[int]] = {}
    for i, (_, folder) in enumerate(runs):
        seen.setdefault(folder, []).append(i)
    return {folder: nums for folder, nums in seen.items() if len(nums) > 1}


def check_distinct(runs: Sequence[tuple[list[str], str]], exclude_keys: Iterable[str]) -> None:
    """Raise ConfigError naming the runs that would share a folder, or whose folder name is
    too long to create."""
    exclude_keys = list(exclude_keys)
    for _, folder in runs:
        longest = max(folder.split("/"), key=lambda part: len(part.encode()))
        if len(longest.encode()) > NAME_MAX:
            raise ConfigError(
                f"the run folder name {longest[:60]!r}... is {len(longest.encode())} bytes, "
                f"longer than a file name may be ({NAME_MAX}). Put the settings that every run "
                f"shares in a sweep file, or leave their keys out of the folder names: "
                f"hydra.job.config.override_dirname.exclude_keys=[{','.join(exclude_keys)},KEY]."
            )
    clashes = shared_folders(runs)
    if not clashes:
        return
    folder, nums = next(iter(clashes.items()))
    shown = "; ".join(f"#{i}: {' '.join(runs[i][0]) or '(no overrides)'}" for i in nums[:3])
    raise ConfigError(
        f"{len(clashes)} run folder(s) would be shared, e.g. {folder or '(the sweep folder)'!r} "
        f"by runs {shown}. Run folders are named by the overrides without "
        f"{', '.join(exclude_keys)}: remove repeated values from the sweep, and run one "
        f"sweep file at a time."
    )


class DistinctRunFolders(Callback):
    """Hydra callback: before a basic-sweeper multirun launches, check that every run has its
    own folder, else exit with status 2 (Hydra turns a callback's exceptions into warnings).
    Other sweepers, and sub-folders numbered by `hydra.job.num`, are left alone."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        hydra_cfg = config.hydra
        if not is_basic_sweeper(hydra_cfg.sweeper.get("_target_")):
            return
        subdir = OmegaConf.to_container(hydra_cfg.sweep, resolve=False).get("subdir")
        if not isinstance(subdir, str) or any(m in subdir for m in UNIQUE_MARKERS):
            return
        naming = hydra_cfg.job.config.override_dirname
        exclude = list(naming.exclude_keys)
        params = hydra_cfg.sweeper.get("params")
        runs = plan_runs(
            OmegaConf.to_container(params, resolve=False) if params else {},
            list(hydra_cfg.overrides.task),
            exclude,
            naming.item_sep,
            naming.kv_sep,
        )
        runs = [
            (job, subdir.replace("${hydra.job.override_dirname}", folder)) for job, folder in runs
        ]
        try:
            check_distinct(runs, exclude)
        except ConfigError as exc:
            print(f"aelab: error: {exc}", file=sys.stderr)
            raise SystemExit(2) from exc
