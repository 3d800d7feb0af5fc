"""notebooks/seed_study.ipynb: committed without outputs, and executed top to bottom in a real
kernel (nbclient) on a small real study that the CLI writes, found from the kernel's working
folder, and on a folder with no runs named by AELAB_RUNS."""

from __future__ import annotations

import base64
import json
import math
import statistics
from pathlib import Path

import nbformat
from nbclient import NotebookClient

from conftest import REPO, TINY, run_cli

NOTEBOOK = REPO / "notebooks" / "seed_study.ipynb"
STUDY_COMMAND = "python -m aelab -m +sweep=seed_study hydra/launcher=joblib hydra.launcher.n_jobs=2"
PNG = b"\x89PNG\r\n\x1a\n"


def execute(cwd: Path, runs: str | None, monkeypatch) -> nbformat.NotebookNode:
    """Run every cell in a kernel whose working folder is `cwd`, with AELAB_RUNS=runs (unset
    for None; the kernel inherits the environment)."""
    if runs is None:
        monkeypatch.delenv("AELAB_RUNS", raising=False)
    else:
        monkeypatch.setenv("AELAB_RUNS", runs)
    cwd.mkdir(parents=True, exist_ok=True)
    nb = nbformat.read(NOTEBOOK, as_version=4)
    client = NotebookClient(
        nb,
        timeout=180,
        kernel_name="python3",
        resources={"metadata": {"path": str(cwd)}},
    )
    client.execute()  # raises CellExecutionError on the first failing cell
    return nb


def outputs(nb: nbformat.NotebookNode) -> tuple[str, list[str], list[bytes]]:
    """(printed text, Markdown outputs, PNG images) of the executed notebook; no errors."""
    text, markdown, images = [], [], []
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            assert out.output_type != "error", f"{out.ename}: {out.evalue}"
            if out.output_type == "stream":
                assert out.name == "stdout" or "Traceback" not in out.text, out.text
                text.append(out.text)
            data = out.get("data", {})
            if "text/markdown" in data:
                markdown.append(data["text/markdown"])
            if "image/png" in data:
                images.append(base64.b64decode(data["image/png"]))
    return "".join(text), markdown, images


def bce_excess(p: float, t: float) -> float:
    """BCE minus the binary entropy of the target: KL(t || p) of two Bernoullis."""
    return t * math.log(t / p) + (1 - t) * math.log((1 - t) / (1 - p))


def asymmetry(text: str, loss: str) -> list[str]:
    """The printed values of `loss` at p = 0.7 and 0.9 (and their ratio), as printed."""
    [values] = [
        line.split()[1:]
        for line in text.splitlines()
        if line.startswith(f"{loss} ") and "autograd" not in line
    ]
    return values


def row_of(table: str, first_cell: str) -> list[str]:
    """The cells of the Markdown table's row whose first cell is `first_cell` (padded or not)."""
    rows = [[c.strip() for c in ln.strip().strip("|").split("|")] for ln in table.splitlines()]
    [row] = [r for r in rows if r[0] == first_cell]
    return row


def test_committed_notebook_has_no_outputs():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(nb)
    assert nb.metadata.kernelspec.name == "python3"
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code and any(c.cell_type == "markdown" for c in nb.cells)
    for cell in code:
        assert cell.outputs == [] and cell.execution_count is None, cell.source[:80]


def test_notebook_runs_on_a_real_study(tmp_path, monkeypatch):
    study = tmp_path / "outputs" / "sweeps" / "seed_study"  # the default, in a folder above
    done = run_cli(
        "-m",
        "experiment=seed_baseline",
        "loss=bce,mse",
        "seed=0,1",
        *TINY,
        "logger=none",
        f"hydra.sweep.dir={study}",
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    metrics = [json.loads(p.read_text()) for p in sorted(study.glob("*/metrics.json"))]
    assert len(metrics) == 4 and {m["status"] for m in metrics} == {"completed"}

    # the kernel works in tmp_path/notebooks, AELAB_RUNS unset: the study is found above it
    text, markdown, images = outputs(execute(tmp_path / "notebooks", None, monkeypatch))

    # part 1: the asymmetry for t = 0.8, BCE minus H(t) at 0.7 and 0.9, and MSE equal at both
    low, high = bce_excess(0.7, 0.8), bce_excess(0.9, 0.8)
    assert high > low
    assert asymmetry(text, "bce_excess")[:2] == [f"{low:.6f}", f"{high:.6f}"]
    assert asymmetry(text, "mse")[:2] == ["0.010000", "0.010000"]
    assert text.count(": ok") == 3  # autograd matched the three gradient formulas

    # part 2: the seeds of each loss grouped, with the study's own numbers
    assert f"4 runs under {study.resolve()} (4 completed); axes: loss, seed" in text
    [table] = markdown
    header = row_of(table, "loss")
    for column in (
        "test/mse",
        "diagnostics/blob/ev",
        "diagnostics/collapse/norm_ratio/W1",
        "verdict",
    ):
        assert column in header
    for loss in ("bce", "mse"):
        row = dict(zip(header, row_of(table, loss)))
        assert row["runs"] == row["completed"] == "2"
        runs = [m for m in metrics if f"loss={loss}" in m["overrides"]]
        assert len(runs) == 2
        mean = statistics.fmean(m["test"]["mse"] for m in runs)
        assert row["test/mse"].startswith(f"{mean:.4g} ± "), row
        assert all(m["verdict"] in row["verdict"] for m in runs), row

    # the loss/gradient figure, the heatmap and the curves
    assert len(images) == 3 and all(image.startswith(PNG) for image in images)


def test_notebook_without_runs_says_how_to_make_them(tmp_path, monkeypatch):
    missing = "studies/__no_such_study__"  # relative: to the kernel's working folder
    text, markdown, images = outputs(execute(tmp_path / "work", missing, monkeypatch))
    assert f"No runs under {(tmp_path / 'work').resolve() / missing}" in text
    assert STUDY_COMMAND in text
    assert markdown == [] and len(images) == 1  # part 1 still drew its figure
