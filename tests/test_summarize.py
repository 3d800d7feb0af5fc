"""aelab.analysis.summarize on hand-made run folders with known numbers: the table, the
grouping over seeds, runs that failed or are unfinished, generic verdict/diagnostics
columns, the plots."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest
import yaml
from matplotlib.image import imread

from aelab.analysis.summarize import (
    axes,
    group_over_seeds,
    load_runs,
    main,
    plot_curves,
    plot_heatmap,
    table,
    to_markdown,
)


def make_run(root: Path, overrides: dict, metrics: dict | None, raw: str | None = None) -> Path:
    """A run folder as Hydra and aelab leave it: .hydra/{overrides,config}.yaml, metrics.json."""
    folder = root / ",".join(f"{k}={v}" for k, v in overrides.items())
    (folder / ".hydra").mkdir(parents=True)
    lines = [f"{k}={v}" for k, v in overrides.items()] + ["data=synthetic", "resume=true"]
    (folder / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(lines))
    (folder / ".hydra" / "config.yaml").write_text(yaml.safe_dump({"seed": 0, "loss": {}}))
    if raw is not None:
        (folder / "metrics.json").write_text(raw)
    elif metrics is not None:
        (folder / "metrics.json").write_text(json.dumps(metrics))
    return folder


def completed(mse: float, **extra) -> dict:
    return {
        "status": "completed",
        "epochs": 2,
        "seed": 0,
        "val": {"mse": mse + 0.01, "bce": 0.5, "loss": mse + 0.01},
        "test": {"mse": mse, "bce": 0.4, "loss": mse},
        "history": {"val/mse": [mse + 0.1, mse + 0.01], "train/loss": [0.3, 0.2]},
        **extra,
    }


@pytest.fixture
def seeds_sweep(tmp_path: Path) -> Path:
    """2 losses x 3 seeds: bce 0.1/0.2/0.3; mse 0.05/0.07 and one failed run."""
    for seed, mse in enumerate((0.1, 0.2, 0.3)):
        make_run(tmp_path, {"loss": "bce", "seed": seed}, completed(mse))
    make_run(tmp_path, {"loss": "mse", "seed": 0}, completed(0.05))
    make_run(tmp_path, {"loss": "mse", "seed": 1}, completed(0.07))
    make_run(tmp_path, {"loss": "mse", "seed": 2},
             {"status": "failed", "error": "RuntimeError: boom\nsecond line", "val": {},
              "test": {}, "history": {"val/mse": [0.2]}})
    return tmp_path


def test_rows_follow_each_run_and_seeds_are_grouped_mean_std(seeds_sweep):
    runs = load_runs(seeds_sweep)
    assert axes(runs) == ["loss", "seed"]  # data=synthetic is the same everywhere; resume ignored
    rows = table(runs)
    assert [(r["loss"], r["seed"], r["status"]) for r in rows] == [
        ("bce", "0", "completed"), ("bce", "1", "completed"), ("bce", "2", "completed"),
        ("mse", "0", "completed"), ("mse", "1", "completed"), ("mse", "2", "failed"),
    ]
    assert rows[1]["test/mse"] == 0.2 and rows[1]["val/mse"] == pytest.approx(0.21)
    assert rows[5]["test/mse"] is None and rows[5]["error"].startswith("RuntimeError: boom")

    bce, mse = group_over_seeds(runs)
    assert (bce["loss"], bce["runs"], bce["completed"]) == ("bce", 3, 3)
    assert bce["status"] == "3 completed"
    assert bce["test/mse"] == pytest.approx(0.2)
    assert bce["test/mse std"] == pytest.approx(0.1)  # sample std of 0.1, 0.2, 0.3
    assert bce["epochs"] == 2 and bce["epochs std"] == 0
    assert (mse["runs"], mse["completed"]) == (3, 2)
    assert mse["status"] == "2 completed, 1 failed"
    assert mse["test/mse"] == pytest.approx(0.06)  # the failed run is not averaged
    assert mse["test/mse std"] == pytest.approx(math.sqrt(2) * 0.01)
    assert "0.2 ± 0.1" in to_markdown([bce])


def test_a_non_finite_metric_gives_a_non_finite_mean_not_an_error(tmp_path):
    for seed, ratio in enumerate((math.inf, 2.0, 4.0)):
        make_run(tmp_path, {"seed": seed}, completed(0.1, diagnostics={"ratio": ratio}))
    [row] = group_over_seeds(load_runs(tmp_path))
    assert row["diagnostics/ratio"] == math.inf and math.isnan(row["diagnostics/ratio std"])
    assert row["test/mse"] == pytest.approx(0.1) and row["test/mse std"] == pytest.approx(0)


def test_unfinished_and_other_statuses_are_listed_never_dropped(tmp_path):
    make_run(tmp_path, {"lr": "0.1"}, completed(0.1))
    make_run(tmp_path, {"lr": "0.2"}, None)  # .hydra, no metrics.json: died or still running
    make_run(tmp_path, {"lr": "0.3"}, None, raw='{"status": "compl')  # cut short
    make_run(tmp_path, {"lr": "0.4"}, {"status": "interrupted", "epochs": 1})
    make_run(tmp_path, {"lr": "0.5"}, {"status": "diverged", "error": "loss is nan"})
    rows = table(load_runs(tmp_path))
    assert [(r["lr"], r["status"]) for r in rows] == [
        ("0.1", "completed"), ("0.2", "unfinished"), ("0.3", "unfinished"),
        ("0.4", "interrupted"), ("0.5", "diverged"),
    ]
    assert group_over_seeds(load_runs(tmp_path)) == []  # no seed axis: no grouping


def test_verdict_and_diagnostics_become_columns_when_present(tmp_path):
    diag = {"collapse/rho_layer0": 0.25, "blob/ev": -0.5}
    make_run(tmp_path, {"loss": "bce"}, completed(0.1, verdict="blob", diagnostics=diag,
                                                   diagnostics_history={"blob/ev": [0.1]}))
    make_run(tmp_path, {"loss": "mse"}, completed(0.05, verdict="ok"))
    rows = table(load_runs(tmp_path))
    columns = list(rows[0])
    assert columns[:5] == ["loss", "status", "test/mse", "test/bce", "test/loss"]
    assert columns.index("verdict") < columns.index("diagnostics/collapse/rho_layer0")
    assert rows[0]["diagnostics/collapse/rho_layer0"] == 0.25 and rows[0]["verdict"] == "blob"
    assert rows[1]["diagnostics/blob/ev"] is None and rows[1]["verdict"] == "ok"
    assert not any(c.startswith("diagnostics_history") for c in columns)


def assert_png(path: Path) -> None:
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert imread(path).shape[0] > 100


def test_command_writes_tables_and_plots(seeds_sweep, capsys):
    assert main([str(seeds_sweep), "--metric", "val/mse"]) == 0
    printed = capsys.readouterr().out
    assert "6 runs" in printed and "| loss | seed | status |" in printed
    assert "Mean ± std over seeds" in printed and "Every run: data=synthetic" in printed
    with open(seeds_sweep / "summary.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 6 and float(rows[0]["test/mse"]) == 0.1 and rows[5]["test/mse"] == ""
    with open(seeds_sweep / "summary_seeds.csv", newline="") as f:
        grouped = list(csv.DictReader(f))
    assert float(grouped[0]["test/mse std"]) == pytest.approx(0.1)
    assert (seeds_sweep / "summary.md").read_text().count("\n| ") == 1 + 6  # header, runs
    assert_png(seeds_sweep / "heatmap_val_mse.png")
    assert_png(seeds_sweep / "curves_val_mse.png")


def test_columns_narrow_the_markdown_tables_and_keep_the_csv_whole(seeds_sweep, capsys):
    assert main([str(seeds_sweep), "--columns", "test/mse,val/bce"]) == 0
    seeds_md = (seeds_sweep / "summary_seeds.md").read_text().splitlines()
    assert seeds_md[0] == "| loss | runs | completed | status | test/mse | val/bce |"
    assert seeds_md[2] == "| bce | 3 | 3 | 3 completed | 0.2 ± 0.1 | 0.5 ± 0 |"
    per_run = (seeds_sweep / "summary.md").read_text()
    assert "| loss | seed | status | error | test/mse | val/bce |" in per_run
    assert "test/bce" not in per_run
    with open(seeds_sweep / "summary.csv", newline="") as f:
        assert "test/bce" in next(csv.reader(f))
    capsys.readouterr()
    assert main([str(seeds_sweep), "--columns", "test/mse,error"]) == 0  # error: a column too
    assert "| loss | seed | status | error | test/mse |" in (seeds_sweep / "summary.md").read_text()
    assert main([str(seeds_sweep), "--columns", "test/mse,test/msee"]) == 2
    assert "--columns test/msee: no such metric; these runs have test/mse" in (
        capsys.readouterr().err
    )


def test_command_refuses_an_unknown_axis_and_an_empty_folder(seeds_sweep, tmp_path, capsys):
    assert main([str(seeds_sweep), "--x", "activation"]) == 2
    assert "not an axis of these runs (loss, seed)" in capsys.readouterr().err
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main([str(empty)]) == 2
    assert "no run folders" in capsys.readouterr().err


def test_heatmap_marks_cells_without_a_completed_run(tmp_path):
    make_run(tmp_path, {"loss": "bce", "norm": "unit"}, completed(0.1))
    make_run(tmp_path, {"loss": "mse", "norm": "unit"}, completed(0.05))
    make_run(tmp_path, {"loss": "bce", "norm": "standard"}, {"status": "failed"})
    make_run(tmp_path, {"loss": "mse", "norm": "standard"}, completed(0.2))
    runs = load_runs(tmp_path)
    fig = plot_heatmap(runs, "test/mse", "loss", "norm", tmp_path / "h.png")
    texts = [t.get_text() for t in fig.axes[0].texts]
    assert "1 failed" in texts and "0.1" in texts and "0.05" in texts
    assert_png(tmp_path / "h.png")
    fig = plot_curves(runs, "val/mse", tmp_path / "c.png")
    assert len(fig.axes[0].lines) == 3  # the failed run has no history
