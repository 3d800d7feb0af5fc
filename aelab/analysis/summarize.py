"""Summarise a sweep from its run folders: one table (CSV, Markdown, printed) and two plots.

    python -m aelab.summarize DIR [--metric test/mse] [--x loss] [--y activation]
                                  [--curve val/mse] [--out FOLDER] [--columns C1,C2,...|all]

The runs are read by `aelab.analysis.runs` (metrics.json and .hydra/ of every run folder
under DIR); any status other than "completed" is shown as it is, never dropped. The axes are
the override keys whose values differ between runs. When `seed` is one of them, a second
table groups the seeds of each cell into mean +- std (over completed runs).

Printed and written as Markdown: the axes, status, verdict, test/mse, the explained variance
(diagnostics/blob/ev) and the W1 norm ratio (diagnostics/collapse/norm_ratio/W1), at most
10 columns; `--columns` names others (a metric, status, verdict, error, folder, runs, ...),
`--columns all` shows every column. The CSV files keep every column, numbers as in
metrics.json.

Written to DIR (or --out): summary.csv and summary.md (one row per run), summary_seeds.csv
and summary_seeds.md (when seeds vary), heatmap_<metric>.png (the metric over two axes,
averaged over the others) and curves_<key>.png (that history key of every run by epoch).

In a notebook: `runs = load_runs(dir)`, then `table(runs)` and `group_over_seeds(runs)`
(pandas DataFrames), `to_markdown(frame)`, `plot_heatmap(runs, "test/mse", "loss",
"activation")` and `plot_curves(runs)`, which return matplotlib Figures (Agg canvas).
"""

from __future__ import annotations

import argparse
import difflib
import math
import statistics
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from aelab.analysis.plots import (
    DEFAULT_CURVE,
    DEFAULT_METRIC,
    count,
    plot_curves,
    plot_heatmap,
)
from aelab.analysis.runs import (
    SEED,
    UNFINISHED,
    axes,
    find_run_folders,
    fixed_overrides,
    load_run,
    load_runs,
    sorted_runs,
)

__all__ = [
    "SEED", "UNFINISHED", "axes", "find_run_folders", "fixed_overrides", "group_over_seeds",
    "load_run", "load_runs", "main", "metric_columns", "plot_curves", "plot_heatmap",
    "summarize", "table", "to_markdown", "write_csv",
]

FIRST_METRICS = ("test/mse", "test/bce", "test/loss", "val/mse", "val/bce", "val/loss", "verdict")
# the columns shown by default (after the axes), when the runs have them
DEFAULT_COLUMNS = ("status", "verdict", "test/mse", "diagnostics/blob/ev",
                   "diagnostics/collapse/norm_ratio/W1")
MAX_COLUMNS = 10  # shown by default, a `<m> std` column counting with its `<m>`
ALL = "all"


# ---------------------------------------------------------------------------- tables


def metric_columns(runs: Sequence[dict[str, Any]]) -> list[str]:
    """Metric names found in any run: val/test mse, bce, loss and verdict first, then the rest."""
    found = list(dict.fromkeys(k for run in runs for k in run["metrics"]))
    first = [k for k in FIRST_METRICS if k in found]
    rest = sorted(k for k in found if k not in first)
    split = [k for k in rest if k.startswith(("test/", "val/"))]
    return first + split + [k for k in rest if k not in split]


def table(runs: Sequence[dict[str, Any]], keys: Sequence[str] | None = None) -> pd.DataFrame:
    """One row per run: the axes, status, final metrics, error (when a run has one) and folder.

    Object columns holding metrics.json's own values: None where a run has no such value,
    NaN where metrics.json says NaN."""
    keys = axes(runs) if keys is None else list(keys)
    metrics = metric_columns(runs)
    extra = ["error"] if any(run["error"] for run in runs) else []
    columns = [*keys, "status", *metrics, *extra, "folder"]
    rows = [
        [run["overrides"].get(k) for k in keys] + [run["status"]]
        + [run["metrics"].get(m) for m in metrics] + [run[c] for c in (*extra, "folder")]
        for run in sorted_runs(runs, keys)
    ]
    return pd.DataFrame(rows, columns=columns, dtype=object)


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _present(values: pd.Series) -> list[Any]:
    return [v for v in values if v is not None]  # None: no value; NaN is a value


def _mean(values: pd.Series) -> Any:
    """Mean of the numbers (a NaN or inf propagates); text values (verdict) are counted."""
    values = _present(values)
    if values and all(_number(v) for v in values):
        # statistics, not Series.mean/std: their rounded sums gave 0.4 ± 6.8e-17 for 3 x 0.4
        return statistics.fmean(values)
    return count(values) or None


def _std(values: pd.Series) -> float | None:
    """Sample std; None for fewer than two numbers, NaN when one is not finite."""
    values = _present(values)
    if len(values) < 2 or not all(_number(v) for v in values):
        return None
    return statistics.stdev(values) if all(map(math.isfinite, values)) else math.nan


def group_over_seeds(
    runs: Sequence[dict[str, Any]], keys: Sequence[str] | None = None
) -> pd.DataFrame:
    """One row per cell of the other axes: `runs`, `completed`, `status` (counts), then for
    each numeric metric its mean over the cell's completed runs and `<metric> std` (sample
    std, None for fewer than two); text metrics (verdict) are counted. Empty when seeds do
    not vary."""
    keys = axes(runs) if keys is None else list(keys)
    if SEED not in keys:
        return pd.DataFrame()
    cells = [k for k in keys if k != SEED]
    frame = table(runs, keys)
    metrics = metric_columns(runs)
    done = frame["status"] == "completed"
    frame.loc[~done, metrics] = None  # only completed runs are averaged
    numeric = [m for m in metrics if any(_number(v) for v in frame[m])]
    named = {
        "runs": ("status", "size"),
        "completed": ("status", lambda s: int((s == "completed").sum())),
        "status": ("status", count),
    }
    for m in metrics:
        named[m] = (m, _mean)
        if m in numeric:
            named[f"{m} std"] = (m, _std)
    by = [frame[k] for k in cells] or np.zeros(len(frame))  # no other axis: one cell
    grouped = frame.groupby(by, sort=False, dropna=False).agg(**named)
    # agg turns a cell's None (no value) into NaN: put None back where a cell has < 1 or 2
    present = frame[metrics].map(lambda v: v is not None).groupby(by, sort=False, dropna=False)
    present = present.sum()
    stds = (present[numeric] > 1).set_axis([f"{m} std" for m in numeric], axis=1)
    keep = pd.concat([present > 0, stds], axis=1).reindex(columns=grouped.columns, fill_value=True)
    grouped = grouped.astype(object).where(keep, None).reset_index(drop=not cells)
    grouped = grouped.astype(object)
    grouped[cells] = grouped[cells].where(grouped[cells].notna(), None)  # groupby's NaN key
    return grouped


def _is_nan(value: Any) -> bool:
    return isinstance(value, float) and math.isnan(value)


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value).splitlines()[0].replace("|", "\\|") if str(value) else ""


def to_markdown(frame: pd.DataFrame, columns: Sequence[str] | None = None) -> str:
    """A Markdown table (pandas' to_markdown); `<m>` and `<m> std` columns are shown together
    as `mean ± std`; numbers to 4 significant digits, a text's first line."""
    columns = list(frame.columns) if columns is None else list(columns)
    shown = [c for c in columns if not (c.endswith(" std") and c[:-4] in columns)]
    cells = frame[shown].map(_cell) if len(frame) else frame[shown].astype(str)
    for c in shown:
        if f"{c} std" in columns:
            std = frame[f"{c} std"].map(lambda s: f" ± {s:.2g}" if isinstance(s, float) else "")
            cells[c] = cells[c] + std
    return cells.to_markdown(index=False, disable_numparse=True) + "\n"


def write_csv(frame: pd.DataFrame, path: str | Path) -> Path:
    """CSV with full-precision numbers (Python's repr of each float), empty for missing values
    and `nan` for a NaN (to_csv writes both as its na_rep, so NaN is spelt out first)."""
    path = Path(path)
    frame.mask(frame.map(_is_nan), "nan").to_csv(path, index=False)
    return path


# ---------------------------------------------------------------------------- columns shown


def default_columns(frame: pd.DataFrame, lead: Sequence[str]) -> list[str]:
    """`lead` (the axes) then DEFAULT_COLUMNS that `frame` has, MAX_COLUMNS shown at most."""
    chosen = [*lead, *(c for c in DEFAULT_COLUMNS if c in frame.columns and c not in lead)]
    return with_std(frame, chosen[:MAX_COLUMNS])


def with_std(frame: pd.DataFrame, columns: Sequence[str]) -> list[str]:
    """`columns` of `frame`, each followed by its `<c> std` column where there is one."""
    return [x for c in columns for x in (c, f"{c} std") if x in frame.columns]


def shown_columns(frame: pd.DataFrame, lead: Sequence[str], columns: Sequence[str] | None
                  ) -> list[str]:
    """The columns of `frame` to show: the default choice (`columns` None), every one (ALL in
    `columns`), else `lead` (the axes), status and `columns`."""
    if columns is None:
        return default_columns(frame, lead)
    if ALL in columns:
        return list(frame.columns)
    return with_std(frame, list(dict.fromkeys([*lead, "status", *columns])))


def close_columns(name: str, names: Sequence[str]) -> list[str]:
    """Up to 4 of `names` close to `name`: the same last part (ev: diagnostics/blob/ev), a
    close spelling (difflib), or holding it (norm_ratio: diagnostics/collapse/norm_ratio/W1)."""
    tail = name.rsplit("/", 1)[-1]
    found = [c for c in names if c.rsplit("/", 1)[-1] == tail]
    found += difflib.get_close_matches(name, names, n=3, cutoff=0.6)
    found += [c for c in names if len(name) > 2 and name in c]
    return list(dict.fromkeys(found))[:4]


def check_columns(columns: Sequence[str], frames: Sequence[pd.DataFrame]) -> None:
    """Raise ValueError naming the `columns` that no frame has, with close matches."""
    known = list(dict.fromkeys(c for f in frames for c in f.columns))
    names = [c for c in known if not c.endswith(" std")]
    problems, lost = [], False
    for name in (c for c in columns if c not in known and c != ALL):
        close = close_columns(name, names)
        problems.append(f"--columns {name}: no such column"
                        + (f" (did you mean {' or '.join(close)}?)" if close else ""))
        lost = lost or not close
    if problems:
        listed = f"; these runs have {', '.join(names)}" if lost else ""
        raise ValueError("; ".join(problems) + listed + f"; --columns {ALL} shows every column")


# ---------------------------------------------------------------------------- the command


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)


def summarize(
    root: str | Path,
    metric: str = DEFAULT_METRIC,
    x: str | None = None,
    y: str | None = None,
    curve: str = DEFAULT_CURVE,
    out: str | Path | None = None,
    columns: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Write the tables and plots of the runs under `root` to `out` (default: `root`).

    `columns`: the Markdown tables' columns after the axes and status (None: the default
    choice, ["all"]: every one); the CSV files keep every column.
    Returns {"runs", "axes", "fixed", "rows", "grouped", "files", "markdown", "hidden"}
    (rows and grouped: DataFrames; hidden: how many columns the per-run table leaves out).
    Raises ValueError when there is no run, when `x`/`y` is not an axis or a column is unknown.
    """
    root = Path(root)
    out = Path(out) if out is not None else root
    runs = load_runs(root)
    if not runs:
        raise ValueError(f"no run folders (.hydra/ or metrics.json) under {root}")
    keys = axes(runs)
    for name, axis in (("--x", x), ("--y", y)):
        if axis is not None and axis not in keys:
            raise ValueError(f"{name} {axis}: not an axis of these runs ({', '.join(keys)})")
    if x is None or y is None:  # fill the missing ones from the other axes, seed last
        free = [k for k in keys if k not in (x, y)]
        x = x if x is not None else (free.pop(0) if free else None)
        y = y if y is not None else (free.pop(0) if free else None)
    rows = table(runs, keys)
    grouped = group_over_seeds(runs, keys)
    if columns is not None:
        check_columns(columns, [rows, grouped])
    out.mkdir(parents=True, exist_ok=True)
    fixed = fixed_overrides(runs, keys)
    files = [write_csv(rows, out / "summary.csv")]
    shown = shown_columns(rows, keys, columns)
    markdown = to_markdown(rows, shown)
    if fixed:
        markdown = (
            "Every run: " + " ".join(f"{k}={v}" for k, v in fixed.items()) + "\n\n" + markdown
        )
    (out / "summary.md").write_text(markdown)
    files.append(out / "summary.md")
    if len(grouped):
        cells = [k for k in keys if k != SEED]
        files.append(write_csv(grouped, out / "summary_seeds.csv"))
        seeds_md = to_markdown(grouped, shown_columns(grouped, cells, columns))
        (out / "summary_seeds.md").write_text(seeds_md)
        files.append(out / "summary_seeds.md")
        markdown += "\nMean ± std over seeds (completed runs):\n\n" + seeds_md
    if x is not None:
        heatmap = out / f"heatmap_{_safe(metric)}.png"
        plot_heatmap(runs, metric, x, y, heatmap)
        files.append(heatmap)
    curves = out / f"curves_{_safe(curve)}.png"
    plot_curves(runs, curve, curves, keys)
    files.append(curves)
    return {
        "runs": runs,
        "axes": keys,
        "fixed": fixed,
        "rows": rows,
        "grouped": grouped,
        "files": files,
        "markdown": markdown,
        "hidden": len(rows.columns) - len(shown),
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m aelab.summarize",
        description="Summarise the run folders under DIR: a table (CSV, Markdown) and plots.",
    )
    parser.add_argument("dir", type=Path, help="a multirun folder (or any folder of runs)")
    parser.add_argument("--metric", default=DEFAULT_METRIC, help="heatmap metric (test/mse)")
    parser.add_argument("--x", help="heatmap columns: an axis (default: the first)")
    parser.add_argument("--y", help="heatmap rows: an axis (default: the second)")
    parser.add_argument("--curve", default=DEFAULT_CURVE, help="history key to plot (val/mse)")
    parser.add_argument("--out", type=Path, help="where to write (default: DIR)")
    parser.add_argument(
        "--columns",
        help="comma-separated columns the printed and Markdown tables show after the axes "
        "and status: metrics or status, verdict, error, folder, runs, completed; 'all' for "
        "every one (default: verdict, test/mse, diagnostics/blob/ev, "
        "diagnostics/collapse/norm_ratio/W1; the CSV files keep every column)",
    )
    args = parser.parse_args(argv)
    if not args.dir.is_dir():
        parser.error(f"{args.dir} is not a folder")
    columns = [c.strip() for c in args.columns.split(",") if c.strip()] if args.columns else None
    try:
        result = summarize(args.dir, args.metric, args.x, args.y, args.curve, args.out, columns)
    except ValueError as exc:
        print(f"aelab: error: {exc}", file=sys.stderr)
        return 2
    runs = result["runs"]
    done = sum(r["status"] == "completed" for r in runs)
    print(
        f"{len(runs)} runs under {args.dir} ({done} completed); axes: "
        f"{', '.join(result['axes']) or '(none)'}\n"
    )
    print(result["markdown"])
    if columns is None and result["hidden"]:
        print(f"({result['hidden']} more columns in summary.csv; --columns all shows them)\n")
    for path in result["files"]:
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
