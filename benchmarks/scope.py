"""The scope study's tables (docs/findings.md#scope-where-does-the-answer-hold), from the run
folders of sweeps/scope*.yaml:

    python -m benchmarks.scope outputs/sweeps/scope [outputs/sweeps/scope_long]

For every setting (data, width, optimiser) and penalty: each arm's verdict counts and mean
+- std over seeds of the explained variance (EV) and ||W1||/||W1(0)||, then, per mistake
(H8, H4, H5), whether the 2017 report reproduces: the mistaken arm collapsed (W1 -> 0) on
every seed while its MSE arm is healthy on every seed.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

from aelab.analysis.plots import count
from aelab.analysis.summarize import axes, fixed_overrides, group_over_seeds, load_runs, table

EV, W1 = "diagnostics/blob/ev", "diagnostics/collapse/norm_ratio/W1"
ARMS = ("pair_h8_bce", "pair_h8_mse", "pair_h4", "pair_h5", "pair_mse", "pair_bce")
MISTAKES = {"H8": ("pair_h8_bce", "pair_h8_mse"), "H4": ("pair_h4", "pair_mse"),
            "H5": ("pair_h5", "pair_mse")}
SETTING = ("data", "model.hidden", "optimizer", "shrink")
DEFAULTS = {"model.hidden": "[100,50]", "optimizer": "adam"}


def cells(folder: Path) -> pd.DataFrame:
    """One row per (setting, arm): verdicts, EV and W1 over seeds (a single seed: its run)."""
    runs = load_runs(folder)
    grouped = group_over_seeds(runs)
    if grouped.empty:  # one seed (scope_long): the runs themselves
        grouped = table(runs).assign(runs=1)
        grouped["verdict"] = grouped["verdict"].map(lambda v: count([v]))
    defaults = {**DEFAULTS, **fixed_overrides(runs, axes(runs))}
    for key in (*SETTING, "experiment"):
        if key not in grouped:
            grouped[key] = None
        grouped[key] = grouped[key].where(grouped[key].notna(), defaults.get(key))
    return grouped


def verdict_set(counts: str) -> set[str]:
    """{'collapsed'} of "3 collapsed" (summarize's counts)."""
    return {part.split(" ", 1)[1] for part in str(counts).split(", ")}


def number(frame: pd.Series, key: str) -> str:
    mean, std = frame.get(key), frame.get(f"{key} std")
    if mean is None or pd.isna(mean):
        return ""
    return f"{mean:.3g}" + (f" ± {std:.2g}" if isinstance(std, float) and not pd.isna(std)
                            else "")


def holds(rows: pd.DataFrame, mistake: str, partner: str) -> str:
    """'yes' when the mistaken arm collapsed on every seed and its MSE arm is healthy on every
    seed; else what happened instead."""
    arm = rows.set_index("experiment")
    if mistake not in arm.index or partner not in arm.index:
        return "not run"
    mine, theirs = arm.loc[mistake, "verdict"], arm.loc[partner, "verdict"]
    if verdict_set(mine) == {"collapsed"} and verdict_set(theirs) == {"healthy"}:
        return "yes"
    return f"no ({mine}; MSE arm {theirs})"


def report(frame: pd.DataFrame) -> str:
    lines = []
    for setting, rows in frame.groupby(list(SETTING), sort=True, dropna=False):
        name = ", ".join(f"{k}={v}" for k, v in zip(SETTING, setting))
        lines += [f"### {name}", "", "| arm | runs | verdicts | EV | W1 ratio |",
                  "| --- | --- | --- | --- | --- |"]
        for arm in ARMS:
            row = rows[rows["experiment"] == arm]
            if len(row):
                r = row.iloc[0]
                lines.append(f"| {arm} | {r['runs']} | {r['verdict']} | "
                             f"{number(r, EV)} | {number(r, W1)} |")
        repro = "; ".join(f"{m}: {holds(rows, *arms)}" for m, arms in MISTAKES.items())
        lines += ["", f"reproduces (mistake collapsed, MSE healthy): {repro}", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.scope", description=__doc__)
    parser.add_argument("folders", nargs="+", type=Path, help="the scope sweeps' folders")
    args = parser.parse_args(argv)
    for folder in args.folders:
        print(f"## {folder}\n\n{report(cells(folder))}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
