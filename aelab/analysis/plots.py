"""The two plots of a sweep summary: a heatmap of one metric over two axes and the curves of
one history key by epoch. Each returns a matplotlib Figure on an Agg canvas (no pyplot)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from aelab.analysis.runs import SEED, axes, sorted_runs, values_of

DEFAULT_METRIC = "test/mse"
DEFAULT_CURVE = "val/mse"


def figure(width: float, height: float):
    """A constrained-layout Figure on its own Agg canvas (pyplot is not used)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def finite(value: Any) -> bool:
    """A finite int or float (not a bool, not a string)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def count(values: Any) -> str:
    """"2 completed, 1 failed": each distinct value with its count, in order of appearance."""
    counts = pd.Series(list(values), dtype=object).astype(str).value_counts(sort=False)
    return ", ".join(f"{n} {v}" for v, n in counts.items())


def plot_heatmap(
    runs: Sequence[dict[str, Any]],
    metric: str = DEFAULT_METRIC,
    x: str | None = None,
    y: str | None = None,
    path: str | Path | None = None,
):
    """`metric` over axes `x` (columns) and `y` (rows), averaged over the completed runs of each
    cell; a cell without one shows its runs' statuses. `y=None`: one row. Returns the Figure."""
    xs = values_of(runs, x) if x else [None]
    ys = values_of(runs, y) if y else [None]
    data = pd.DataFrame({
        "i": [ys.index(r["overrides"].get(y)) if y else 0 for r in runs],
        "j": [xs.index(r["overrides"].get(x)) if x else 0 for r in runs],
        "status": [r["status"] for r in runs],
        "value": [float(v) if r["status"] == "completed" and finite(v := r["metrics"].get(metric))
                  else math.nan for r in runs],
    })
    shape = {"index": range(len(ys)), "columns": range(len(xs))}
    mean = data.pivot_table(index="i", columns="j", values="value", aggfunc="mean").reindex(**shape)
    done = data.pivot_table(index="i", columns="j", values="value", aggfunc="count")
    size = data.pivot_table(index="i", columns="j", values="status", aggfunc="size")
    statuses = data.pivot_table(index="i", columns="j", values="status", aggfunc=count)
    done, size, statuses = (t.reindex(**shape) for t in (done, size, statuses))
    grid = mean.to_numpy(dtype=float)

    from matplotlib import colormaps

    fig = figure(1.6 + 1.3 * len(xs), 1.2 + 0.8 * len(ys))
    ax = fig.add_subplot()
    cmap = colormaps["viridis"].with_extremes(bad="lightgrey")
    image = ax.imshow(grid, cmap=cmap, aspect="auto")
    fig.colorbar(image, ax=ax, label=metric)
    middle = (pd.Series(grid.ravel()).min() + pd.Series(grid.ravel()).max()) / 2
    for i in range(len(ys)):
        for j in range(len(xs)):
            if math.isfinite(grid[i, j]):
                n = size.iat[i, j] > 1
                note = f"{grid[i, j]:.4g}" + (f"\nn={int(done.iat[i, j])}" if n else "")
            else:
                note = str(statuses.iat[i, j]).replace(", ", "\n") if size.iat[i, j] > 0 else ""
            dark = math.isfinite(grid[i, j]) and grid[i, j] < middle
            ax.text(j, i, note or "no run", ha="center", va="center", fontsize=8,
                    color="white" if dark else "black")
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
    fig = figure(7.5, 4.5)
    ax = fig.add_subplot()
    positive, plotted = True, 0
    ranges: list[float] = []
    for run in sorted_runs(runs, keys):
        values = run["history"].get(key) or []
        points = [(e + 1, float(v)) for e, v in enumerate(values) if finite(v)]
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
