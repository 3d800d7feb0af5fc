"""One picture of a study: a panel per run with its reconstructions, W1 filters and curves.

    python -m aelab.figures DIR --out FIGURE.png [--select seed=0 ...] [--drop loss=l1 ...]
                                [--no-share-y]

Each panel shows, for one run folder under DIR: the first 8 fixed validation digits above
their reconstructions at the end of training (the last `reconstructions` image in its
TensorBoard events), the first layer's weights as tiles on their fixed scale (the last
`collapse/W1_filters` image), and the curves over epochs (integer ticks) of `val/mse` and
of ||W1|| / ||W1(0)|| (right-hand axis; log scale when it spans more than a factor 10), from
metrics.json. The val/mse axes of all panels share one scale (--no-share-y: each its own);
a dashed line marks the run's mean-image MSE, `diagnostics/blob/mean_image/mse` (the MSE of
the constant prediction x_bar on the Diagnostics probe images, the first
`callbacks.diagnostics.probe_size` validation images), when the run recorded it. The title
names the run by the overrides that differ between the runs shown, with its verdict. Only
the run folders are read; nothing is recomputed.
"""

from __future__ import annotations

import argparse
import io
import math
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from aelab.analysis.plots import figure
from aelab.analysis.runs import axes, load_runs

RECONSTRUCTIONS = "reconstructions"
FILTERS = "collapse/W1_filters"
NORM_RATIO = "collapse/norm_ratio/W1"
MEAN_IMAGE = "diagnostics/blob/mean_image/mse"  # the mean image's MSE on the probe images
DIGITS = 8  # columns of the reconstruction grid shown (tiles of 28 + 2 pixels)


def last_images(folder: str | Path, tags: Sequence[str]) -> dict[str, np.ndarray]:
    """The last image of each tag in a run folder's TensorBoard events, as arrays (H, W[, C])."""
    import PIL.Image
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(folder), size_guidance={"images": 1, "scalars": 1,
                                                       "histograms": 1, "tensors": 1})
    acc.Reload()
    found = set(acc.Tags().get("images", []))
    return {
        tag: np.asarray(PIL.Image.open(io.BytesIO(acc.Images(tag)[-1].encoded_image_string)))
        for tag in tags
        if tag in found
    }


def _pairs(conditions: Sequence[str], option: str) -> list[tuple[str, str]]:
    if any("=" not in c or c.startswith("=") for c in conditions):
        raise ValueError(f"{option} expects key=value, got {list(conditions)}")
    return [c.partition("=")[::2] for c in conditions]


def select(runs: list[dict[str, Any]], conditions: Sequence[str],
           drop: Sequence[str] = ()) -> list[dict[str, Any]]:
    """The runs whose overrides match every `key=value` in `conditions` and none in `drop`."""
    wanted, unwanted = _pairs(conditions, "--select"), _pairs(drop, "--drop")
    return [r for r in runs if all(r["overrides"].get(k) == v for k, v in wanted)
            and not any(r["overrides"].get(k) == v for k, v in unwanted)]


def _ratio_axis(twin: Any, ratio: Sequence[float]) -> None:
    """The W1 norm ratio's axis, labelled, with plain-number ticks: log scale when the ratio
    spans more than a factor 10 (ticks at 1, 2, 5 x 10^k), else linear."""
    from matplotlib.ticker import FuncFormatter, LogLocator, MaxNLocator, NullFormatter

    values = [v for v in ratio if isinstance(v, (int, float)) and math.isfinite(v) and v > 0]
    if values and max(values) > 10 * min(values):
        twin.set_yscale("log")
        twin.yaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
        twin.yaxis.set_minor_formatter(NullFormatter())
    else:
        twin.yaxis.set_major_locator(MaxNLocator(nbins=4))
    twin.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:.3g}"))
    twin.set_ylabel("W1 norm ratio ||W1|| / ||W1(0)||", fontsize=7, color="C3")
    twin.tick_params(labelsize=6, colors="C3")


def plot_panels(runs: Sequence[dict[str, Any]], columns: int = 4, share_y: bool = True):
    """A Figure with one panel (3 stacked axes) per run; returns it (Agg canvas).

    The curves' axes share one val/mse scale (`share_y`), with the run's mean-image MSE
    (`diagnostics/blob/mean_image/mse`, the blob line, when recorded) dashed, integer epoch
    ticks and the W1 norm ratio on a labelled right-hand axis."""
    from matplotlib.ticker import MaxNLocator

    if not runs:
        raise ValueError("no runs to draw")
    keys = [k for k in axes(runs) if len({r["overrides"].get(k) for r in runs}) > 1]
    columns = max(1, min(columns, len(runs)))
    rows = math.ceil(len(runs) / columns)
    fig = figure(3.2 * columns, 4.6 * rows)
    grid = fig.add_gridspec(rows * 3, columns, height_ratios=[0.9, 1.6, 1.4] * rows)
    first = None  # the first curves' axes: the others share its val/mse scale
    for i, run in enumerate(runs):
        row, col = divmod(i, columns)
        images = last_images(run["path"], (RECONSTRUCTIONS, FILTERS))
        parts = [f"{k}={run['overrides'].get(k)}" for k in keys] or [run["folder"]]
        label = ", ".join(parts) if len(", ".join(parts)) <= 40 else "\n".join(parts)
        verdict = run["metrics"].get("verdict") or run["status"]
        top = fig.add_subplot(grid[row * 3, col])
        top.set_title(f"{label}\n{verdict}", fontsize=8)
        if RECONSTRUCTIONS in images:
            recon = images[RECONSTRUCTIONS]
            top.imshow(recon[:, : DIGITS * recon.shape[0] // 2], cmap="gray", vmin=0, vmax=255)
        middle = fig.add_subplot(grid[row * 3 + 1, col])
        if FILTERS in images:
            middle.imshow(images[FILTERS], cmap="gray", vmin=0, vmax=255)
        for ax in (top, middle):
            ax.set_xticks([])
            ax.set_yticks([])
        bottom = fig.add_subplot(grid[row * 3 + 2, col], sharey=first if share_y else None)
        first = first or bottom
        mse = run["history"].get("val/mse") or []
        bottom.plot(range(1, len(mse) + 1), mse, color="C0", label="val/mse")
        blob = run["metrics"].get(MEAN_IMAGE)
        if isinstance(blob, (int, float)) and math.isfinite(blob):
            bottom.axhline(blob, color="grey", linestyle="--", linewidth=1, label="mean image")
        bottom.xaxis.set_major_locator(MaxNLocator(integer=True))
        bottom.set_xlabel("epoch", fontsize=7)
        bottom.set_ylabel("val/mse", fontsize=7, color="C0")
        bottom.tick_params(labelsize=6)
        if i == 0:
            bottom.legend(fontsize=6, loc="upper right")
        ratio = run["diagnostics_history"].get(NORM_RATIO) or []
        if ratio:
            twin = bottom.twinx()
            epochs = run["diagnostics_history"].get("epoch") or range(len(ratio))
            twin.plot(epochs, ratio, color="C3")
            _ratio_axis(twin, ratio)
    return fig


def save(fig: Any, path: str | Path, dpi: int, colors: int = 256) -> None:
    """Write `fig` as a PNG: full RGB with colors=0, else with an adaptive palette (grey
    digits and filters and two curve colours lose nothing visible at 256 colours)."""
    if not colors:
        fig.savefig(path, dpi=dpi)
        return
    import PIL.Image

    buffer = io.BytesIO()
    fig.savefig(buffer, dpi=dpi, format="png")
    buffer.seek(0)
    rgb = PIL.Image.open(buffer).convert("RGB")
    rgb.quantize(colors=colors, method=PIL.Image.Quantize.MEDIANCUT).save(path, optimize=True)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m aelab.figures",
        description="One panel per run: reconstructions, W1 filters, val/mse and W1 norm curves.",
    )
    parser.add_argument("dir", help="a study folder (any folder of runs)")
    parser.add_argument("--out", required=True, help="the PNG to write")
    parser.add_argument("--select", action="append", default=[], metavar="KEY=VALUE",
                        help="keep the runs with this override (repeatable), e.g. seed=0")
    parser.add_argument("--drop", action="append", default=[], metavar="KEY=VALUE",
                        help="leave out the runs with this override (repeatable)")
    parser.add_argument("--columns", type=int, default=4, help="panels per row (4)")
    parser.add_argument("--share-y", action=argparse.BooleanOptionalAction, default=True,
                        help="one val/mse scale for every panel (default; --no-share-y: each "
                             "panel its own)")
    parser.add_argument("--dpi", type=int, default=80, help="resolution (80)")
    parser.add_argument("--colors", type=int, default=256,
                        help="an adaptive palette of this many colours, a third of the bytes "
                             "of full RGB (256; 0: full RGB)")
    args = parser.parse_args(argv)
    if not 0 <= args.colors <= 256:
        parser.error(f"--colors {args.colors}: a palette holds 1 to 256 colours (0: full RGB)")
    try:
        runs = select(load_runs(args.dir), args.select, args.drop)
        if not runs:
            raise ValueError(f"no run folders under {args.dir} match {args.select or 'anything'}"
                             + (f" once {args.drop} are dropped" if args.drop else ""))
        fig = plot_panels(runs, args.columns, args.share_y)
    except ValueError as exc:
        print(f"aelab: error: {exc}", file=sys.stderr)
        return 2
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    save(fig, args.out, args.dpi, args.colors)
    print(f"wrote {args.out} ({len(runs)} runs)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
