"""aelab.analysis.summarize on hand-made run folders with known numbers: the table, the
grouping over seeds, runs that failed or are unfinished, generic verdict/diagnostics
columns, the columns shown, the plots."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pandas as pd
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
    assert isinstance(rows, pd.DataFrame) and len(rows) == 6
    assert list(zip(rows["loss"], rows["seed"], rows["status"])) == [
        ("bce", "0", "completed"), ("bce", "1", "completed"), ("bce", "2", "completed"),
        ("mse", "0", "completed"), ("mse", "1", "completed"), ("mse", "2", "failed"),
    ]
    assert rows.at[1, "test/mse"] == 0.2 and rows.at[1, "val/mse"] == 0.2 + 0.01  # as stored
    assert rows.at[1, "epochs"] == 2 and type(rows.at[1, "epochs"]) is int
    assert rows.at[5, "test/mse"] is None and rows.at[5, "error"].startswith("RuntimeError: boom")

    grouped = group_over_seeds(runs)
    bce, mse = (grouped.iloc[i] for i in range(2))
    assert (bce["loss"], bce["runs"], bce["completed"]) == ("bce", 3, 3)
    assert bce["status"] == "3 completed"
    assert bce["test/mse"] == pytest.approx(0.2)
    assert bce["test/mse std"] == pytest.approx(0.1)  # sample std of 0.1, 0.2, 0.3
    assert bce["epochs"] == 2 and bce["epochs std"] == 0
    assert bce["test/bce std"] == 0  # three runs at 0.4: exactly 0, not a rounding residue
    assert (mse["runs"], mse["completed"]) == (3, 2)
    assert mse["status"] == "2 completed, 1 failed"
    assert mse["test/mse"] == pytest.approx(0.06)  # the failed run is not averaged
    assert mse["test/mse std"] == pytest.approx(math.sqrt(2) * 0.01)
    assert "0.2 ± 0.1" in to_markdown(grouped.iloc[:1])


def test_a_non_finite_metric_gives_a_non_finite_mean_not_an_error(tmp_path):
    for seed, ratio in enumerate((math.inf, 2.0, 4.0)):
        make_run(tmp_path, {"seed": seed}, completed(0.1, diagnostics={"ratio": ratio}))
    [row] = group_over_seeds(load_runs(tmp_path)).to_dict("records")
    assert row["diagnostics/ratio"] == math.inf and math.isnan(row["diagnostics/ratio std"])
    assert row["test/mse"] == pytest.approx(0.1) and row["test/mse std"] == pytest.approx(0)


def test_a_cell_without_a_value_is_empty_not_nan(tmp_path):
    """A metric no completed run of a cell has is None (empty), a NaN one stays NaN ("nan")."""
    for seed in (0, 1):
        make_run(tmp_path, {"loss": "bce", "seed": seed},
                 completed(0.1, diagnostics={"ev": math.nan, "r": 0.5}))
        make_run(tmp_path, {"loss": "mse", "seed": seed}, completed(0.2))
    grouped = group_over_seeds(load_runs(tmp_path))
    bce, mse = grouped.to_dict("records")
    assert math.isnan(bce["diagnostics/ev"]) and bce["diagnostics/r"] == 0.5
    assert mse["diagnostics/ev"] is None and mse["diagnostics/r std"] is None
    assert main([str(tmp_path), "--columns", "diagnostics/ev,diagnostics/r"]) == 0
    with open(tmp_path / "summary_seeds.csv", newline="") as f:
        bce_csv, mse_csv = csv.DictReader(f)
    assert (bce_csv["diagnostics/ev"], mse_csv["diagnostics/ev"]) == ("nan", "")
    assert cells(tmp_path / "summary_seeds.md", "mse")[2:] == ["", ""]


def test_unfinished_and_other_statuses_are_listed_never_dropped(tmp_path):
    make_run(tmp_path, {"lr": "0.1"}, completed(0.1))
    make_run(tmp_path, {"lr": "0.2"}, None)  # .hydra, no metrics.json: died or still running
    make_run(tmp_path, {"lr": "0.3"}, None, raw='{"status": "compl')  # cut short
    make_run(tmp_path, {"lr": "0.4"}, {"status": "interrupted", "epochs": 1})
    make_run(tmp_path, {"lr": "0.5"}, {"status": "diverged", "error": "loss is nan"})
    rows = table(load_runs(tmp_path))
    assert list(zip(rows["lr"], rows["status"])) == [
        ("0.1", "completed"), ("0.2", "unfinished"), ("0.3", "unfinished"),
        ("0.4", "interrupted"), ("0.5", "diverged"),
    ]
    assert group_over_seeds(load_runs(tmp_path)).empty  # no seed axis: no grouping


def test_verdict_and_diagnostics_become_columns_when_present(tmp_path):
    diag = {"collapse/rho_layer0": 0.25, "blob/ev": -0.5}
    make_run(tmp_path, {"loss": "bce"}, completed(0.1, verdict="blob", diagnostics=diag,
                                                   diagnostics_history={"blob/ev": [0.1]}))
    make_run(tmp_path, {"loss": "mse"}, completed(0.05, verdict="ok"))
    rows = table(load_runs(tmp_path))
    columns = list(rows.columns)
    assert columns[:5] == ["loss", "status", "test/mse", "test/bce", "test/loss"]
    assert columns.index("verdict") < columns.index("diagnostics/collapse/rho_layer0")
    assert rows.at[0, "diagnostics/collapse/rho_layer0"] == 0.25 and rows.at[0, "verdict"] == "blob"
    assert rows.at[1, "diagnostics/blob/ev"] is None and rows.at[1, "verdict"] == "ok"
    assert not any(c.startswith("diagnostics_history") for c in columns)


def cells(path: Path, first: str, last: bool = False) -> list[str]:
    """The cells of the (`last`: last) row whose first cell is `first` in the Markdown at
    `path`."""
    rows = [[c.strip() for c in line.strip("|").split("|")]
            for line in path.read_text().splitlines() if line.startswith("|")]
    found = [r for r in rows if r[0] == first]
    if last:
        return found[-1]
    [row] = found
    return row


def header(markdown: str) -> list[str]:
    """The header cells of the first Markdown table in `markdown`."""
    line = next(ln for ln in markdown.splitlines() if ln.startswith("|"))
    return [c.strip() for c in line.strip("|").split("|")]


def assert_png(path: Path) -> None:
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert imread(path).shape[0] > 100


STUDY = {"diagnostics": {"blob/ev": 0.25, "collapse/norm_ratio/W1": 0.5, "rank/W1": 7.0,
                         "blob/mean_image/mse": 0.067}, "verdict": "healthy"}
DEFAULT_HEADER = ["status", "verdict", "test/mse", "diagnostics/blob/ev",
                  "diagnostics/collapse/norm_ratio/W1"]


def test_command_writes_tables_and_plots(seeds_sweep, capsys):
    assert main([str(seeds_sweep), "--metric", "val/mse"]) == 0
    printed = capsys.readouterr().out
    # the default columns these runs have: no verdict, no diagnostics
    assert "6 runs" in printed and header(printed) == ["loss", "seed", "status", "test/mse"]
    assert "Mean ± std over seeds" in printed and "Every run: data=synthetic" in printed
    with open(seeds_sweep / "summary.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 6 and float(rows[0]["test/mse"]) == 0.1 and rows[5]["test/mse"] == ""
    assert rows[1]["val/mse"] == repr(0.2 + 0.01) and rows[1]["epochs"] == "2"
    assert rows[5]["error"] == "RuntimeError: boom\nsecond line"
    with open(seeds_sweep / "summary_seeds.csv", newline="") as f:
        grouped = list(csv.DictReader(f))
    assert float(grouped[0]["test/mse std"]) == pytest.approx(0.1)
    assert printed.count("| bce ") == 3 + 1  # a row per run, a row for the seeds of bce
    assert cells(seeds_sweep / "summary.md", "mse", last=True)[1:4] == ["2", "failed", ""]
    assert cells(seeds_sweep / "summary_seeds.md", "mse") == [
        "mse", "2 completed, 1 failed", "0.06 ± 0.014"]
    assert_png(seeds_sweep / "heatmap_val_mse.png")
    assert_png(seeds_sweep / "curves_val_mse.png")


def test_the_default_table_is_ten_readable_columns_with_the_numbers_of_each_run(
        tmp_path, capsys):
    make_run(tmp_path, {"loss": "bce", "seed": 0}, completed(0.1, **STUDY))
    make_run(tmp_path, {"loss": "bce", "seed": 1},
             completed(0.3, **STUDY | {"verdict": "blob", "diagnostics": {
                 "blob/ev": 0.0625, "collapse/norm_ratio/W1": 1.5, "rank/W1": 3.0}}))
    assert main([str(tmp_path)]) == 0
    printed = capsys.readouterr().out
    assert header(printed) == ["seed", *DEFAULT_HEADER]  # loss is the same everywhere
    md = tmp_path / "summary.md"
    assert cells(md, "0") == ["0", "completed", "healthy", "0.1", "0.25", "0.5"]
    assert cells(md, "1") == ["1", "completed", "blob", "0.3", "0.0625", "1.5"]
    assert "more columns in summary.csv; --columns all shows them" in printed
    assert "rank/W1" not in printed
    many = tmp_path / "many"  # 8 swept keys: the axes first, 10 columns in all
    for value in (1, 2):
        make_run(many, {f"k{i}": value for i in range(8)}, completed(0.1, **STUDY))
    assert main([str(many)]) == 0
    assert header(capsys.readouterr().out) == [*(f"k{i}" for i in range(8)), "status", "verdict"]
    assert main([str(tmp_path), "--columns", "ev"]) == 2  # a column's last part: named
    assert "--columns ev: no such column (did you mean diagnostics/blob/ev?)" in (
        capsys.readouterr().err)


def test_columns_choose_the_markdown_columns_and_the_csv_stays_whole(seeds_sweep, capsys):
    assert main([str(seeds_sweep), "--columns", "test/mse,val/bce"]) == 0
    seeds_md = seeds_sweep / "summary_seeds.md"
    assert header(seeds_md.read_text()) == ["loss", "status", "test/mse", "val/bce"]
    assert cells(seeds_md, "bce") == ["bce", "3 completed", "0.2 ± 0.1", "0.5 ± 0"]
    per_run = (seeds_sweep / "summary.md").read_text()
    assert header(per_run) == ["loss", "seed", "status", "test/mse", "val/bce"]
    with open(seeds_sweep / "summary.csv", newline="") as f:
        assert "test/bce" in next(csv.reader(f))
    assert main([str(seeds_sweep), "--columns", "status"]) == 0  # not a metric, still a column
    assert header((seeds_sweep / "summary.md").read_text()) == ["loss", "seed", "status"]
    assert main([str(seeds_sweep), "--columns", "error,folder,runs"]) == 0
    assert cells(seeds_sweep / "summary.md", "mse", last=True)[-2:] == [
        "RuntimeError: boom", "loss=mse,seed=2"]
    assert header(seeds_md.read_text()) == ["loss", "status", "runs"]
    capsys.readouterr()
    assert main([str(seeds_sweep), "--columns", "all"]) == 0
    assert header(capsys.readouterr().out) == list(table(load_runs(seeds_sweep)).columns)
    assert header(seeds_md.read_text())[:4] == ["loss", "runs", "completed", "status"]


def test_an_unknown_column_is_refused_naming_close_ones(seeds_sweep, capsys):
    for path in seeds_sweep.glob("summary*"):
        path.unlink()
    assert main([str(seeds_sweep), "--columns", "test/mse,test/msee,stauts"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("aelab: error: --columns test/msee: no such column (did you mean "
                          "test/mse or ")
    assert "--columns stauts: no such column (did you mean status?)" in err
    assert "these runs have" not in err  # every unknown name had close matches
    assert not list(seeds_sweep.glob("summary*"))  # refused before anything is written
    assert main([str(seeds_sweep), "--columns", "zzz"]) == 2
    err = capsys.readouterr().err
    assert "--columns zzz: no such column; these runs have loss, seed, status, test/mse" in err
    assert "--columns all shows every column" in err


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
