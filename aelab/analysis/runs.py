"""Run folders as plain dicts: what `aelab.analysis.summarize` and `aelab.analysis.figures` read.

Every folder under a root holding `.hydra/` or `metrics.json` is a run. Only those files are
read: `metrics.json` (status, final val/test metrics, verdict, diagnostics, history, and the
overrides that label the run) and, for a run without one, `.hydra/overrides.yaml`
(`.hydra/config.yaml` comes along for notebooks). A run without a readable metrics.json is
"unfinished"; any other status is kept as it is. The axes of a study are the override keys
whose values differ between its runs.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

UNFINISHED = "unfinished"
IGNORED_KEYS = ("resume", "sweep")  # overrides that name no axis of the study
SEED = "seed"
# metrics.json keys that are not final metrics (or are shown in their own column)
NOT_METRICS = ("status", "history", "choices", "overrides", "seed", "checkpoint", "error")


def find_run_folders(root: str | Path) -> list[Path]:
    """Folders under `root` (itself included) that hold `.hydra/` or `metrics.json`."""
    root = Path(root)
    found = []
    for folder, dirs, files in os.walk(root):
        if ".hydra" in dirs or "metrics.json" in files:
            found.append(Path(folder))
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
    return sorted(found)


def parse_overrides(lines: Iterable[str]) -> dict[str, str]:
    """`["+loss=bce", "seed=1"]` -> `{"loss": "bce", "seed": "1"}`, without `resume`/`sweep`."""
    out = {}
    for line in lines:
        key, _, value = str(line).partition("=")
        key = key.lstrip("+~")
        if key and key not in IGNORED_KEYS and not key.startswith("hydra."):
            out[key] = value
    return out


def flatten(payload: dict[str, Any]) -> dict[str, Any]:
    """Scalars of nested dicts under "/"-joined keys (pd.json_normalize), as the Python values
    json gave (int, float, bool, str, None); lists (histories) are left out."""
    if not payload:
        return {}
    # to_dict("records") boxes column by column: an int stays an int (iloc[0] made it a float)
    [flat] = pd.json_normalize(payload, sep="/").to_dict("records")
    return {k: v for k, v in flat.items() if v is None or isinstance(v, (bool, int, float, str))}


def _read_yaml(path: Path) -> Any:
    try:
        return yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError):
        return None


def load_run(folder: str | Path, root: str | Path | None = None) -> dict[str, Any]:
    """One run folder as a dict: folder, path, status, overrides, metrics (flat), history,
    diagnostics_history, error, config."""
    folder = Path(folder)
    try:
        payload = json.loads((folder / "metrics.json").read_text())
        if not isinstance(payload, dict):
            raise ValueError("metrics.json is not an object")
    except (OSError, ValueError):
        payload = {}
    # the run's own record first: metrics.json is written by the run that produced the results
    overrides = payload.get("overrides")
    if not isinstance(overrides, list):
        overrides = _read_yaml(folder / ".hydra" / "overrides.yaml")
    if not isinstance(overrides, list):
        overrides = []
    error = payload.get("error")
    return {
        "folder": folder.relative_to(root).as_posix() if root is not None else str(folder),
        "path": str(folder),
        "status": str(payload.get("status") or UNFINISHED),
        "overrides": parse_overrides(overrides),
        "metrics": flatten({k: v for k, v in payload.items() if k not in NOT_METRICS}),
        "history": payload.get("history") or {},
        "diagnostics_history": payload.get("diagnostics_history") or {},
        "error": None if error is None else str(error),
        "config": _read_yaml(folder / ".hydra" / "config.yaml") or {},
    }


def load_runs(root: str | Path) -> list[dict[str, Any]]:
    """Every run under `root`, sorted by folder."""
    root = Path(root)
    return [load_run(folder, root) for folder in find_run_folders(root)]


def natural(value: Any) -> tuple:
    """Sort key: numbers by value before strings, None last."""
    if value is None:
        return (2, "")
    try:
        return (0, float(value), "")
    except (TypeError, ValueError):
        return (1, str(value))


def axes(runs: Sequence[dict[str, Any]]) -> list[str]:
    """Override keys whose values differ between runs (all keys when none do), seed last."""
    keys: list[str] = []
    for run in runs:
        keys += [k for k in run["overrides"] if k not in keys]
    varying = [k for k in keys if len({r["overrides"].get(k) for r in runs}) > 1]
    chosen = varying or keys
    return [k for k in chosen if k != SEED] + ([SEED] if SEED in chosen else [])


def fixed_overrides(runs: Sequence[dict[str, Any]], keys: Sequence[str]) -> dict[str, str]:
    """Overrides that every run shares and that are not axes (e.g. data=synthetic)."""
    if not runs:
        return {}
    first = runs[0]["overrides"]
    return {
        k: v
        for k, v in first.items()
        if k not in keys and all(r["overrides"].get(k, None) == v for r in runs)
    }


def sorted_runs(runs: Sequence[dict[str, Any]], keys: Sequence[str]) -> list[dict[str, Any]]:
    """`runs` in the natural order of their values of `keys`, then by folder."""
    return sorted(
        runs, key=lambda r: ([natural(r["overrides"].get(k)) for k in keys], r["folder"])
    )


def values_of(runs: Sequence[dict[str, Any]], key: str) -> list[str | None]:
    """The values `key` takes in `runs`, in natural order."""
    return sorted({r["overrides"].get(key) for r in runs}, key=natural)
