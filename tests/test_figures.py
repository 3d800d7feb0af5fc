"""`python -m aelab.figures`: one panel per run of a tiny study made through the CLI, and the
curves of hand-made run folders read back from the returned Figure."""

import json
from pathlib import Path

import numpy as np
import PIL.Image
import pytest

from aelab.analysis.figures import (
    DIGITS,
    FILTERS,
    RECONSTRUCTIONS,
    last_images,
    main,
    plot_panels,
)
from aelab.analysis.runs import load_runs

from conftest import TINY, run_cli


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    cwd = tmp_path_factory.mktemp("figures")
    tiny = [o for o in TINY if not o.startswith("trainer.max_epochs")]
    proc = run_cli("-m", *tiny, "trainer.max_epochs=2", "loss=mse,bce", "hydra.sweep.dir=study",
                   cwd=cwd)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return cwd / "study"


def test_the_figure_has_a_panel_per_run_and_is_not_blank(study, tmp_path, capsys):
    out = tmp_path / "figure.png"
    assert main([str(study), "--out", str(out), "--columns", "2", "--dpi", "50"]) == 0
    assert "(2 runs)" in capsys.readouterr().out
    image = np.asarray(PIL.Image.open(out).convert("L"), dtype=float)
    assert image.shape == (round(4.6 * 50), round(2 * 3.2 * 50))  # one row of two panels
    assert image.std() > 20  # digits, filters and curves, not a white page
    assert out.stat().st_size < 300_000
    assert PIL.Image.open(out).mode == "P"  # the default palette
    full = tmp_path / "full.png"
    assert main([str(study), "--out", str(full), "--columns", "2", "--dpi", "50",
                 "--colors", "0"]) == 0
    assert PIL.Image.open(full).mode in ("RGB", "RGBA")
    rgb = np.asarray(PIL.Image.open(full).convert("L"), dtype=float)
    assert np.abs(rgb - image).mean() < 2  # the palette changes little


def test_the_panels_read_the_last_images_of_each_run(study):
    run = next(p for p in study.iterdir() if "loss=bce" in p.name)
    images = last_images(run, (RECONSTRUCTIONS, FILTERS, "no/such/tag"))
    assert set(images) == {RECONSTRUCTIONS, FILTERS}
    recon = images[RECONSTRUCTIONS]
    assert recon.shape[0] == 2 * 30 and recon.shape[1] >= DIGITS * 30  # inputs above outputs
    assert images[FILTERS].shape[0] == images[FILTERS].shape[1]  # 10 x 10 tiles of 30 px


def test_select_keeps_matching_runs_and_refuses_an_empty_choice(study, tmp_path, capsys):
    out = tmp_path / "one.png"
    assert main([str(study), "--out", str(out), "--select", "loss=mse"]) == 0
    assert "(1 runs)" in capsys.readouterr().out
    assert main([str(study), "--out", str(tmp_path / "none.png"), "--select", "loss=l1"]) == 2
    assert "no run folders" in capsys.readouterr().err
    assert not (tmp_path / "none.png").exists()
    assert main([str(study), "--out", str(out), "--drop", "loss=mse"]) == 0
    assert "(1 runs)" in capsys.readouterr().out
    assert main([str(study), "--out", str(out), "--drop", "loss=mse", "--drop", "loss=bce"]) == 2
    assert "dropped" in capsys.readouterr().err
    assert main([str(study), "--out", str(out), "--drop", "mse"]) == 2
    assert "--drop expects key=value" in capsys.readouterr().err


# --- the curves, from hand-made run folders ---------------------------------------------------


def hand_made(root: Path, name: str, mse: list[float], ratio: list[float],
              mean_image: float | None) -> None:
    folder = root / name
    folder.mkdir(parents=True)
    diagnostics = {"collapse/norm_ratio/W1": ratio[-1]}
    if mean_image is not None:
        diagnostics["blob/mean_image/mse"] = mean_image
    (folder / "metrics.json").write_text(json.dumps({
        "status": "completed", "overrides": [f"loss={name}"], "verdict": "healthy",
        "history": {"val/mse": mse}, "diagnostics": diagnostics,
        "diagnostics_history": {"epoch": [float(e) for e in range(len(ratio))],
                                "collapse/norm_ratio/W1": ratio},
    }))


@pytest.fixture
def curves(tmp_path) -> list[dict]:
    """bce: val/mse 0.06 -> 0.03 over 3 epochs, W1 ratio 1 -> 0.7; mse: 0.2 -> 0.1 over 2
    epochs, W1 ratio 1 -> 0.01 (log scale); only bce recorded its mean-image MSE (0.067)."""
    hand_made(tmp_path, "bce", [0.06, 0.04, 0.03], [1.0, 0.9, 0.8, 0.7], mean_image=0.067)
    hand_made(tmp_path, "mse", [0.2, 0.1], [1.0, 0.1, 0.01], mean_image=None)
    return load_runs(tmp_path)


def curve_axes(fig) -> tuple[list, list]:
    """(the val/mse axes, their W1-ratio twins) of each panel, in panel order."""
    fig.canvas.draw()  # autoscaled limits and tick positions as drawn
    mse = [ax for ax in fig.axes if ax.get_ylabel() == "val/mse"]
    ratio = [ax for ax in fig.axes if "W1" in ax.get_ylabel()]
    return mse, ratio


def shown_ticks(ax, axis: str) -> list[float]:
    lo, hi = sorted(ax.get_xlim() if axis == "x" else ax.get_ylim())
    ticks = ax.get_xticks() if axis == "x" else ax.get_yticks()
    return [float(t) for t in ticks if lo <= t <= hi]


def test_panels_share_the_mse_scale_and_mark_the_mean_image(curves):
    mse, ratio = curve_axes(plot_panels(curves, columns=2))
    assert len(mse) == len(ratio) == 2
    assert mse[0].get_ylim() == mse[1].get_ylim()  # one scale for both panels
    low, high = mse[0].get_ylim()
    assert low <= 0.03 and high >= 0.2  # it holds both runs' curves
    # the mean-image line: dashed, at the recorded value, only where it was recorded
    [line] = [ln for ln in mse[0].get_lines() if ln.get_linestyle() == "--"]
    assert list(line.get_ydata()) == [0.067, 0.067] and line.get_label() == "mean image"
    assert not [ln for ln in mse[1].get_lines() if ln.get_linestyle() == "--"]
    [curve] = [ln for ln in mse[1].get_lines() if ln.get_label() == "val/mse"]
    assert list(curve.get_xdata()) == [1, 2] and list(curve.get_ydata()) == [0.2, 0.1]
    for ax in mse:  # whole epochs only
        ticks = shown_ticks(ax, "x")
        assert len(ticks) >= 2 and all(t == int(t) for t in ticks), ticks


def test_the_w1_ratio_axis_is_labelled_with_plain_number_ticks(curves):
    _, (linear, log) = curve_axes(plot_panels(curves, columns=2))
    assert linear.get_ylabel() == log.get_ylabel() == "W1 norm ratio ||W1|| / ||W1(0)||"
    assert linear.get_yscale() == "linear" and log.get_yscale() == "log"  # 1 -> 0.01: log
    assert shown_ticks(log, "y") == pytest.approx([0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0])
    for ax in (linear, log):
        ticks = shown_ticks(ax, "y")
        labels = [ax.yaxis.get_major_formatter()(t, i) for i, t in enumerate(ticks)]
        assert len(ticks) >= 2 and labels == [f"{t:.3g}" for t in ticks], labels
    assert [t.get_text() for t in log.get_yticklabels(minor=True) if t.get_text()] == []


def test_each_panel_its_own_scale_on_request(curves, tmp_path, capsys):
    mse, _ = curve_axes(plot_panels(curves, columns=2, share_y=False))
    assert mse[0].get_ylim() != mse[1].get_ylim()
    assert mse[0].get_ylim()[1] < 0.1  # bce's own scale: up to its 0.067 line, not mse's 0.2
    out = tmp_path / "own.png"
    assert main([str(tmp_path), "--out", str(out), "--no-share-y", "--dpi", "40"]) == 0
    assert "(2 runs)" in capsys.readouterr().out and out.stat().st_size > 0
