"""Summarise a sweep from its run folders: one table (CSV, Markdown, printed) and two plots.

    python -m aelab.summarize DIR [--metric test/mse] [--x loss] [--y activation]
                                  [--curve val/mse] [--out FOLDER] [--columns M1,M2,...]

Every folder under DIR holding `.hydra/` or `metrics.json` is a run. Only those files are
read: `metrics.json` (status, final val/test metrics, verdict, diagnostics, history, and the
overrides that label the run) and, for a run without one, `.hydra/overrides.yaml`
(`.hydra/config.yaml` comes along for notebooks).
A run without a readable metrics.json is "unfinished"; any status other than "completed"
is shown as it is, never dropped. The axes are the override keys whose values differ
between runs. When `seed` is one of them, a second table groups the seeds of each cell
into mean +- std (over completed runs).

Written to DIR (or --out): summary.csv and summary.md (one row per run), summary_seeds.csv
and summary_seeds.md (when seeds vary), heatmap_<metric>.png (the metric over two axes,
averaged over the others) and curves_<key>.png (that history key of every run by epoch).

In a notebook: `runs = load_runs(dir)`, then `table(runs)`, `group_over_seeds(runs)`,
`to_markdown(rows)`, `plot_heatmap(runs, "test/mse", "loss", "activation")` and
`plot_curves(runs)`, which return matplotlib Figures (Agg canvas; pyplot is not used).
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import statistics
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import yaml

UNFINISHED = "unfinished"
IGNORED_KEYS = ("resume", "sweep")  # overrides that name no axis of the study
SEED = "seed"
# metrics.json keys that are not final metrics (or are shown in their own column)
TEXT_COLUMNS = ("error",)  # table columns --columns accepts besides the metrics (shown when set)
NOT_METRICS = ("status", "history", "choices", "overrides", "seed", "checkpoint", "error")
FIRST_METRICS = ("test/mse", "test/bce", "test/loss", "val/mse", "val/bce", "val/loss", "verdict")
DEFAULT_METRIC = "test/mse"
DEFAULT_CURVE = "val/mse"


# ---------------------------------------------------------------------------- reading


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


def flatten(payload: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Scalars of nested dicts under "/"-joined keys; lists (histories) are left out."""
    out: dict[str, Any] = {}
    for key, value in payload.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out |= flatten(value, f"{name}/")
        elif value is None or isinstance(value, (bool, int, float, str)):
            out[name] = value
    return out


def _read_yaml(path: Path) -> Any:
    try:
        return yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError):
        return None


def load_run(folder: str | Path, root: str | Path | None = None) -> dict[str, Any]:
    """One run folder as a dict: folder, status, overrides, metrics, history, error, config."""
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
    metrics = flatten({k: v for k, v in payload.items() if k not in NOT_METRICS})
    error = payload.get("error")
    return {
        "folder": folder.relative_to(root).as_posix() if root is not None else str(folder),
        "path": str(folder),
        "status": str(payload.get("status") or UNFINISHED),
        "overrides": parse_overrides(overrides),
        "metrics": metrics,
        "history": payload.get("history") or {},
        "error": None if error is None else str(error),
        "config": _read_yaml(folder / ".hydra" / "config.yaml") or {},
    }


def load_runs(root: str | Path) -> list[dict[str, Any]]:
    """Every run under `root`, sorted by folder."""
    root = Path(root)
    return [load_run(folder, root) for folder in find_run_folders(root)]


# ---------------------------------------------------------------------------- tables


def _natural(value: Any) -> tuple:
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


def metric_columns(runs: Sequence[dict[str, Any]]) -> list[str]:
    """Metric names found in any run: val/test mse, bce, loss and verdict first, then the rest."""
    found: list[str] = []
    for run in runs:
        found += [k for k in run["metrics"] if k not in found]
    first = [k for k in FIRST_METRICS if k in found]
    rest = sorted(k for k in found if k not in first)
    split = [k for k in rest if k.startswith(("test/", "val/"))]
    return first + split + [k for k in rest if k not in split]


def _sorted_runs(runs: Sequence[dict[str, Any]], keys: Sequence[str]) -> list[dict[str, Any]]:
    return sorted(
        runs, key=lambda r: ([_natural(r["overrides"].get(k)) for k in keys], r["folder"])
    )


def table(runs: Sequence[dict[str, Any]], keys: Sequence[str] | None = None) -> list[dict]:
    """One row per run: the axes, status, final metrics, error and folder."""
    keys = axes(runs) if keys is None else list(keys)
    metrics = metric_columns(runs)
    errors = any(run["error"] for run in runs)
    rows = []
    for run in _sorted_runs(runs, keys):
        row = {k: run["overrides"].get(k) for k in keys}
        row["status"] = run["status"]
        row |= {m: run["metrics"].get(m) for m in metrics}
        if errors:
            row["error"] = run["error"]
        row["folder"] = run["folder"]
        rows.append(row)
    return rows


def _numbers(values: Iterable[Any]) -> list[float]:
    return [float(v) for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)]


def _stdev(numbers: Sequence[float]) -> float | None:
    """Sample std; None for fewer than two values, nan when one is not finite (inf, nan)."""
    if len(numbers) < 2:
        return None
    if not all(math.isfinite(x) for x in numbers):
        return math.nan
    return statistics.stdev(numbers)


def _count(values: Iterable[Any]) -> str:
    counts: dict[str, int] = {}
    for v in values:
        counts[str(v)] = counts.get(str(v), 0) + 1
    return ", ".join(f"{n} {v}" for v, n in counts.items())


def group_over_seeds(
    runs: Sequence[dict[str, Any]], keys: Sequence[str] | None = None
) -> list[dict[str, Any]]:
    """One row per cell of the other axes: `runs`, `status` (counts), then for each numeric
    metric its mean over the cell's completed runs and `<metric> std` (sample std, None for
    fewer than two); text metrics (verdict) are counted. Empty when seeds do not vary."""
    keys = axes(runs) if keys is None else list(keys)
    if SEED not in keys:
        return []
    cell_keys = [k for k in keys if k != SEED]
    metrics = metric_columns(runs)
    cells: dict[tuple, list[dict[str, Any]]] = {}
    for run in _sorted_runs(runs, cell_keys):
        cells.setdefault(tuple(run["overrides"].get(k) for k in cell_keys), []).append(run)
    rows = []
    for cell, members in cells.items():
        done = [r for r in members if r["status"] == "completed"]
        row: dict[str, Any] = dict(zip(cell_keys, cell))
        row["runs"] = len(members)
        row["completed"] = len(done)
        row["status"] = _count(r["status"] for r in members)
        for m in metrics:
            values = [r["metrics"].get(m) for r in done if m in r["metrics"]]
            numbers = _numbers(values)
            if numbers and len(numbers) == len(values):
                row[m] = statistics.fmean(numbers)
                row[f"{m} std"] = _stdev(numbers)
            else:
                row[m] = _count(values) if values else None
        rows.append(row)
    return rows


def _columns(rows: Sequence[dict[str, Any]]) -> list[str]:
    columns: list[str] = []
    for row in rows:
        columns += [k for k in row if k not in columns]
    return columns


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value).splitlines()[0].replace("|", "\\|") if str(value) else ""


def to_markdown(rows: Sequence[dict[str, Any]], columns: Sequence[str] | None = None) -> str:
    """A Markdown table; `<m>` and `<m> std` columns are shown together as `mean ± std`."""
    columns = _columns(rows) if columns is None else list(columns)
    shown = [c for c in columns if not (c.endswith(" std") and c[:-4] in columns)]
    lines = ["| " + " | ".join(shown) + " |", "|" + "---|" * len(shown)]
    for row in rows:
        cells = []
        for c in shown:
            text = _cell(row.get(c))
            std = row.get(f"{c} std")
            if f"{c} std" in columns and isinstance(std, float):
                text += f" ± {std:.2g}"
            cells.append(text)
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_csv(
    rows: Sequence[dict[str, Any]], path: str | Path, columns: Sequence[str] | None = None
) -> Path:
    """CSV with full-precision numbers (Python's repr of each float), empty for missing."""
    columns = _columns(rows) if columns is None else list(columns)
    path = Path(path)
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows([{c: "" if r.get(c) is None else r[c] for c in columns} for r in rows])
    return path


# ---------------------------------------------------------------------------- plots


def _figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _values(runs: Sequence[dict[str, Any]], key: str) -> list[str | None]:
    return sorted({r["overrides"].get(key) for r in runs}, key=_natural)


def plot_heatmap(
    runs: Sequence[dict[str, Any]],
    metric: str = DEFAULT_METRIC,
    x: str | None = None,
    y: str | None = None,
    path: str | Path | None = None,
):
    """`metric` over axes `x` (columns) and `y` (rows), averaged over the completed runs of each
    cell; a cell without one shows its runs' statuses. `y=None`: one row. Returns the Figure."""
    xs = _values(runs, x) if x else [None]
    ys = _values(runs, y) if y else [None]
    grid = [[math.nan] * len(xs) for _ in ys]
    notes = [[""] * len(xs) for _ in ys]
    for i, yv in enumerate(ys):
        for j, xv in enumerate(xs):
            cell = [
                r
                for r in runs
                if (not x or r["overrides"].get(x) == xv) and (not y or r["overrides"].get(y) == yv)
            ]
            numbers = _numbers(r["metrics"].get(metric) for r in cell if r["status"] == "completed")
            numbers = [v for v in numbers if math.isfinite(v)]
            if numbers:
                grid[i][j] = statistics.fmean(numbers)
                notes[i][j] = f"{grid[i][j]:.4g}" + (f"\nn={len(numbers)}" if len(cell) > 1 else "")
            else:
                notes[i][j] = _count(r["status"] for r in cell).replace(", ", "\n") or "no run"
    from matplotlib import colormaps

    fig = _figure(1.6 + 1.3 * len(xs), 1.2 + 0.8 * len(ys))
    ax = fig.add_subplot()
    cmap = colormaps["viridis"].with_extremes(bad="lightgrey")
    image = ax.imshow(grid, cmap=cmap, aspect="auto")
    fig.colorbar(image, ax=ax, label=metric)
    finite = [v for row in grid for v in row if math.isfinite(v)]
    middle = (min(finite) + max(finite)) / 2 if finite else 0.0
    for i in range(len(ys)):
        for j in range(len(xs)):
            dark = math.isfinite(grid[i][j]) and grid[i][j] < middle
            ax.text(
                j,
                i,
                notes[i][j],
                ha="center",
                va="center",
                fontsize=8,
                color="white" if dark else "black",
            )
    ax.set_xticks(range(len(xs)), [str(v) for v in xs])
    ax.set_yticks(range(len(ys)), [str(v) for v in ys] if y else [metric])
    ax.set_xlabel(x or "")
    ax.set_ylabel(y or "")
    ax.set_title(f"{metric}, mean over completed runs")
    if path is not None:
        fig.savefig(path, dpi=100)
    return fig


def plot_curves(
    runs: Sequence[dict[str, Any]],
    key: str = DEFAULT_CURVE,
    path: str | Path | None = None,
    keys: Sequence[str] | None = None,
):
    """`history[key]` of every run by epoch; the seeds of a cell share a colour, runs that did
    not complete are dashed. Returns the Figure."""
    from matplotlib.ticker import MaxNLocator

    keys = axes(runs) if keys is None else list(keys)
    cell_keys = [k for k in keys if k != SEED]
    cells: list[tuple] = []
    fig = _figure(7.5, 4.5)
    ax = fig.add_subplot()
    positive, plotted = True, 0
    ranges: list[float] = []
    for run in _sorted_runs(runs, keys):
        values = run["history"].get(key) or []
        points = [(e + 1, float(v)) for e, v in enumerate(values) if _finite(v)]
        if not points:
            continue
        cell = tuple(run["overrides"].get(k) for k in cell_keys)
        first = cell not in cells
        if first:
            cells.append(cell)
        label = " ".join(f"{k}={v}" for k, v in zip(cell_keys, cell)) or run["folder"]
        ax.plot(
            *zip(*points),
            color=f"C{cells.index(cell) % 10}",
            linestyle="-" if run["status"] == "completed" else "--",
            marker="o" if len(points) == 1 else None,
            linewidth=1.2,
            label=label if first else None,
        )
        plotted += 1
        positive = positive and all(v > 0 for _, v in points)
        ranges += [v for _, v in points]
    if ranges and positive and max(ranges) > 10 * min(ranges):
        ax.set_yscale("log")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("epoch")
    ax.set_ylabel(key)
    ax.set_title(f"{key} of {plotted} runs" if plotted else f"no {key} history in these runs")
    if cells:
        ax.legend(fontsize=7, ncol=1 + len(cells) // 12, loc="best")
    if path is not None:
        fig.savefig(path, dpi=100)
    return fig


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


# ---------------------------------------------------------------------------- the command


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)


def _shown(
    rows: Sequence[dict[str, Any]],
    known: Sequence[str],
    metrics: Sequence[str] | None,
    hidden: Sequence[str] = (),
) -> list[str]:
    """Table columns to show: all but `hidden`, or the non-metric ones (of the `known`
    metrics) followed by `metrics` (each with its std column where there is one)."""
    every = [c for c in _columns(rows) if c not in hidden]
    if metrics is None:
        return every
    lead = [c for c in every if c not in known and not c.endswith(" std")]
    return lead + [c for m in metrics for c in (m, f"{m} std") if c in every and c not in lead]


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

    `columns` (metric names) narrows the Markdown tables to the axes, the status and those
    metrics; the CSV files keep every column.
    Returns {"runs", "axes", "fixed", "rows", "grouped", "files", "markdown"}. Raises
    ValueError when there is no run, when `x`/`y` is not an axis or a column is no metric.
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
        free = [k for k in [*(k for k in keys if k != SEED), SEED] if k in keys and k not in (x, y)]
        x = x if x is not None else (free.pop(0) if free else None)
        y = y if y is not None else (free.pop(0) if free else None)
    known = metric_columns(runs)
    if columns is not None:
        unknown = [c for c in columns if c not in known and c not in TEXT_COLUMNS]
        if unknown:
            raise ValueError(
                f"--columns {','.join(unknown)}: no such metric; these runs have "
                f"{', '.join([*known, *TEXT_COLUMNS])}"
            )
    out.mkdir(parents=True, exist_ok=True)
    rows = table(runs, keys)
    grouped = group_over_seeds(runs, keys)
    fixed = fixed_overrides(runs, keys)
    files = [write_csv(rows, out / "summary.csv")]
    markdown = to_markdown(rows, _shown(rows, known, columns, ["folder"]))
    if fixed:
        markdown = (
            "Every run: " + " ".join(f"{k}={v}" for k, v in fixed.items()) + "\n\n" + markdown
        )
    (out / "summary.md").write_text(markdown)
    files.append(out / "summary.md")
    if grouped:
        files.append(write_csv(grouped, out / "summary_seeds.csv"))
        seeds_md = to_markdown(grouped, _shown(grouped, known, columns))
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
        help="comma-separated metrics (or error) the Markdown tables show (default: all; "
        "CSV: all), "
        "e.g. test/mse,diagnostics/blob/ev,diagnostics/collapse/norm_ratio/W1,verdict",
    )
    args = parser.parse_args(argv)
    if not args.dir.is_dir():
        parser.error(f"{args.dir} is not a folder")
    try:
        columns = args.columns.split(",") if args.columns else None
        result = summarize(args.dir, args.metric, args.x, args.y, args.curve, args.out, columns)
    except ValueError as exc:
        print(f"aelab.analysis.summarize: error: {exc}", file=sys.stderr)
        return 2
    runs = result["runs"]
    done = sum(r["status"] == "completed" for r in runs)
    print(
        f"{len(runs)} runs under {args.dir} ({done} completed); axes: "
        f"{', '.join(result['axes']) or '(none)'}\n"
    )
    print(result["markdown"])
    for path in result["files"]:
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
