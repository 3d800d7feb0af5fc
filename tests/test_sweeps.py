"""Sweeps through the real CLI: every file in sweeps/ runs (tiny), run folders stay distinct,
joblib and submitit_local run a 4-run grid that aelab.analysis.summarize reads back, TensorBoard's
HParams sessions compare the runs, a failing run is reported, resume=true skips finished runs."""

from __future__ import annotations

import csv
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import joblib
import pytest
import yaml
from hydra import compose, initialize_config_dir
from hydra.core.override_parser.overrides_parser import OverridesParser
from matplotlib.image import imread
from tensorboard.plugins.hparams import plugin_data_pb2

from aelab.__main__ import CONFIG_DIR
from aelab.analysis.summarize import find_run_folders
from aelab.errors import ConfigError
from aelab.sweeps import plan_runs
from aelab.training.build import build

from conftest import REPO, TINY, compose_config, run_cli
from events import hparams_of, load_events

SWEEPS = sorted(p.stem for p in (REPO / "sweeps").glob("*.yaml"))
ONE_BATCH = [
    "++trainer.limit_train_batches=1",
    "++trainer.limit_val_batches=1",
    "++trainer.limit_test_batches=1",
]
GRID = ["loss=bce,mse", "activation=sigmoid,relu"]
NO_THREADS = [o for o in TINY if not o.startswith("threads=")]  # the launcher decides


def sweep_params(name: str) -> dict[str, str]:
    """`hydra.sweeper.params` of sweeps/<name>.yaml, composed as `+sweep=<name>` does."""
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose("config", overrides=[f"+sweep={name}"], return_hydra_config=True)
    return {k: str(v) for k, v in cfg.hydra.sweeper.params.items()}


def axis_length(key: str, values: str) -> int:
    """How many values a sweep axis takes, as Hydra parses it (`[256,64],[64,32]` is two)."""
    override = OverridesParser.create().parse_overrides([f"{key}={values}"])[0]
    return len(list(override.sweep_string_iterator())) if override.is_sweep_override() else 1


def run_folders(sweep: Path) -> dict[str, Path]:
    return {p.relative_to(sweep).as_posix(): p for p in find_run_folders(sweep)}


def folder_with(folders: dict[str, Path], *items: str) -> Path:
    """The one run folder whose name has all these `key=value` items."""
    [found] = [p for name, p in folders.items() if set(items) <= set(name.split(","))]
    return found


def metrics_of(folder: Path) -> dict:
    return json.loads((folder / "metrics.json").read_text())


def summarize_cli(folder: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "aelab.analysis.summarize", str(folder), *args],
        capture_output=True, text=True, timeout=120,
    )


def printed_rows(text: str) -> list[list[str]]:
    """The cells of each row of the Markdown tables in `text` (tabulate pads them)."""
    return [[c.strip() for c in line.strip().strip("|").split("|")]
            for line in text.splitlines() if line.startswith("|")]


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def assert_png(path: Path) -> None:
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", path
    image = imread(path)
    assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 100


# ------------------------------------------------------------------ sweep files and folders


def test_sweeps_folder_has_the_three_named_sweeps():
    assert {"loss_activation", "normalization", "seeds"} <= set(SWEEPS)
    assert sweep_params("seeds")["seed"] == "0,1,2"


@pytest.mark.parametrize("name", SWEEPS)
def test_every_planned_run_gets_its_own_folder(name):
    params = sweep_params(name)
    size = 1
    for key, values in params.items():
        size *= axis_length(key, values)
    alone = plan_runs(params, [f"+sweep={name}"])
    assert len(alone) == size and len({f for _, f in alone}) == size
    assert all("sweep" not in folder for _, folder in alone)
    # the command line replaces the file's axis of the same key, or adds one
    key = next(iter(params))
    replaced = plan_runs(params, [f"+sweep={name}", f"{key}=X"])
    assert len(replaced) == size // axis_length(key, params[key])
    assert all(f"{key}=X" in folder.split(",") for _, folder in replaced)
    axis = "l2_penalty" if "l2_penalty" not in params else "init.std"  # not one of the file's
    extra = plan_runs(params, [f"+sweep={name}", f"{axis}=0,0.1"])
    assert len({f for _, f in extra}) == len(extra) == 2 * size


@pytest.mark.parametrize("lines", [
    ["seed=0,1,2", "loss=bce,mse", "+init.std=0.1", "resume=true"],
    ["model.hidden=[16,8],[32,8]", "seed=range(3)", "~logger", "++trainer.max_epochs=2"],
    ["activation=choice(relu,tanh)", "optimizer.lr=1e-3,0.1", "seed=4", "seed=0,1"],
    ["data.root='/a b'", "+sweep=seeds", "l2_penalty=0,1e-4"],
])
@pytest.mark.parametrize("seps", [(",", "="), ("/", ":")])
def test_plan_runs_expands_and_names_as_hydra_does(lines, seps):
    """aelab.sweeps.plan_runs (public override parser only) against Hydra's own basic sweeper
    and override_dirname (its internals, imported here only to compare)."""
    from hydra._internal.config_loader_impl import get_overrides_dirname
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper

    parser = OverridesParser.create()
    [jobs] = BasicSweeper.split_arguments(parser.parse_overrides(lines), max_batch_size=None)
    exclude = ["resume", "sweep"]
    expected = [(job, get_overrides_dirname(parser.parse_overrides(job), exclude, *seps))
                for job in jobs]
    assert plan_runs({}, lines, exclude, *seps) == expected
    assert plan_runs({"seed": "7,8"}, lines[1:], exclude, *seps) == [
        (job, get_overrides_dirname(parser.parse_overrides(job), exclude, *seps)) for job in
        BasicSweeper.split_arguments(parser.parse_overrides(["seed=7,8", *lines[1:]]), None)[0]]


@pytest.mark.parametrize("name", SWEEPS)
def test_sweep_file_runs_every_cell_tiny(name, tmp_path):
    """Each sweep file, one batch per run on synthetic data: every planned folder is a run that
    completed, or was refused because build() refuses its combination (bce on standardised
    data); refused cells do not fail the sweep. Each cell runs at its first seed only: seeds
    compose and build alike (a third of the cells, and of this test's minutes).
    The tiny settings are left out of the folder names, which then name the sweep's axes."""
    tiny = [*TINY, *ONE_BATCH, "logger=none"]
    exclude = ["resume", "sweep", *(o.partition("=")[0].lstrip("+") for o in tiny)]
    params = sweep_params(name)
    first_seed = [f"seed={params['seed'].split(',')[0]}"] if "seed" in params else []
    args = [f"+sweep={name}", *tiny, *first_seed]
    proc = run_cli(
        "-m", *args, "hydra.sweep.dir=sweep",
        f"hydra.job.config.override_dirname.exclude_keys=[{','.join(exclude)}]", cwd=tmp_path,
    )
    sweep = tmp_path / "sweep"
    planned = {folder for _, folder in plan_runs(params, args, exclude)}
    folders = run_folders(sweep)
    assert set(folders) == planned, proc.stderr[-2000:]
    refused = []
    for folder, path in folders.items():
        metrics = metrics_of(path)
        if metrics["status"] == "completed":
            continue
        assert metrics["status"] == "refused" and "ConfigError" in metrics["error"], metrics
        overrides = yaml.safe_load((path / ".hydra" / "overrides.yaml").read_text())
        with pytest.raises(ConfigError):
            build(compose_config(overrides, tmp_path / "check"))
        refused.append(folder)
    assert proc.returncode == 0, proc.stderr[-2000:]
    if name == "normalization":
        assert sorted(refused) == sorted(
            f for f in planned if "loss=bce" in f and ("=standard" in f or "=symmetric" in f)
        ) and len(refused) == 2


def test_a_repeated_value_is_refused_before_any_run(tmp_path):
    proc = run_cli("-m", "+sweep=seeds", "seed=1,1", *TINY, "hydra.sweep.dir=sweep", cwd=tmp_path)
    assert proc.returncode == 2
    assert "would be shared" in proc.stderr and "seed=1" in proc.stderr
    assert not find_run_folders(tmp_path / "sweep")


# ------------------------------------------------------------------ launchers and summary


def check_grid_and_summary(sweep: Path, proc: subprocess.CompletedProcess) -> dict[str, Path]:
    """The 4 runs of GRID completed in their own folders; summarize's table matches them."""
    assert proc.returncode == 0, proc.stderr[-3000:]
    folders = run_folders(sweep)
    assert len(folders) == 4
    summary = summarize_cli(sweep, "--x", "loss", "--y", "activation")
    assert summary.returncode == 0, summary.stderr
    header = printed_rows(summary.stdout)[0]
    assert header[:3] == ["loss", "activation", "status"] and "test/mse" in header
    assert len(header) <= 10  # the readable default; summary.csv has every column
    rows = read_csv(sweep / "summary.csv")
    assert len(rows) == 4
    assert list(rows[0])[:3] == ["loss", "activation", "status"]
    assert {"test/mse", "test/bce", "test/loss", "val/mse", "val/bce", "val/loss"} <= set(rows[0])
    for row in rows:
        metrics = metrics_of(sweep / row["folder"])
        assert f"activation={row['activation']}" in row["folder"]
        assert f"loss={row['loss']}" in row["folder"]
        assert row["status"] == metrics["status"] == "completed"
        for split in ("val", "test"):
            for key, value in metrics[split].items():
                assert float(row[f"{split}/{key}"]) == value
        if "verdict" in metrics:
            assert row["verdict"] == metrics["verdict"]
        for key, value in metrics.get("diagnostics", {}).items():
            if isinstance(value, float):
                shown = float(row[f"diagnostics/{key}"])
                assert shown == value or (math.isnan(value) and math.isnan(shown))
    assert sorted((r["loss"], r["activation"]) for r in rows) == [
        ("bce", "relu"), ("bce", "sigmoid"), ("mse", "relu"), ("mse", "sigmoid")
    ]
    assert_png(sweep / "heatmap_test_mse.png")
    assert_png(sweep / "curves_val_mse.png")
    return folders


def differing_hparams(folder: Path) -> set[str]:
    acc = load_events(folder)
    names: set[str] = set()
    for raw in acc.PluginTagToContent("hparams").values():
        data = plugin_data_pb2.HParamsPluginData.FromString(raw)
        if data.HasField("experiment"):
            names |= {h.name for h in data.experiment.hparam_infos if h.differs}
    return names


def test_joblib_grid_then_summary_and_hparams(tmp_path, monkeypatch):
    paths = [str(REPO / "tests"), os.environ.get("PYTHONPATH")]  # for the thread probe
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, paths)))
    proc = run_cli(
        "-m", *GRID, *NO_THREADS, "hydra/launcher=joblib", "hydra.launcher.n_jobs=2",
        "+hydra.callbacks.probe._target_=sweep_probe.ThreadProbe", "hydra.sweep.dir=sweep",
        cwd=tmp_path,
    )
    folders = check_grid_and_summary(tmp_path / "sweep", proc)
    expected = int(os.environ.get("OMP_NUM_THREADS", max(joblib.cpu_count() // 2, 1)))
    for folder in folders.values():
        # joblib gives each of its n_jobs workers cores // n_jobs threads (one here)
        assert (folder / "torch_threads.txt").read_text() == str(expected)
        # TensorBoard on the sweep folder: each run a session with its own values, the
        # swept keys marked as differing (the HParams tab shows those first)
        params, metric_tags = hparams_of(load_events(folder))
        assert f"loss={params['loss']}" in folder.name
        assert f"activation={params['activation']}" in folder.name
        assert params["data.train_size"] == "256"  # overridden keys are hyperparameters too
        assert {"final/test_mse", "final/val_mse"} <= set(metric_tags)
        assert differing_hparams(folder) == {"loss", "activation", "verdict"}  # + always shown


def test_submitit_local_grid_then_summary(tmp_path):
    proc = run_cli(
        "-m", *GRID, *TINY, "hydra/launcher=submitit_local", "hydra.launcher.timeout_min=5",
        "hydra.sweep.dir=sweep", cwd=tmp_path,
    )
    check_grid_and_summary(tmp_path / "sweep", proc)
    assert (tmp_path / "sweep" / ".submitit").is_dir()  # the jobs went through submitit


def test_slurm_launcher_config_reaches_sbatch(tmp_path, monkeypatch):
    """hydra/launcher=slurm without a cluster: stand-ins for srun and sbatch keep the script
    that submitit hands to sbatch, then refuse it (so nothing waits for a queue)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "srun").write_text("#!/bin/sh\nexit 1\n")
    (bin_dir / "sbatch").write_text(
        '#!/bin/sh\nfor last; do :; done\ncp "$last" "$SBATCH_COPY"\n'
        'echo "sbatch: test double" >&2\nexit 1\n'
    )
    for tool in ("srun", "sbatch"):
        (bin_dir / tool).chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("SBATCH_COPY", str(tmp_path / "sbatch.sh"))
    proc = run_cli(
        "-m", *GRID, *TINY, "hydra/launcher=slurm", "hydra.launcher.partition=gpu",
        "hydra.launcher.timeout_min=120", "hydra.launcher.gpus_per_node=1",
        "hydra.launcher.array_parallelism=2", "hydra.sweep.dir=sweep", cwd=tmp_path,
    )
    assert proc.returncode == 1 and "sbatch: test double" in proc.stderr
    script = (tmp_path / "sbatch.sh").read_text()
    for line in ("--array=0-3%2", "--partition=gpu", "--time=120", "--gpus-per-node=1",
                 "--cpus-per-task=2", "--job-name=aelab"):
        assert f"#SBATCH {line}\n" in script
    assert "export OMP_NUM_THREADS=2\n" in script


# ------------------------------------------------------------------ failures and resume


def test_a_refused_cell_is_summarized_and_resume_skips_finished_runs(tmp_path):
    args = ["-m", "loss=bce,mse", "normalization=unit,standard", *TINY, "hydra.sweep.dir=sweep"]
    first = run_cli(*args, cwd=tmp_path)
    sweep = tmp_path / "sweep"
    folders = run_folders(sweep)
    assert first.returncode == 0, first.stderr[-2000:]  # a refused cell is a result
    assert "3 completed, 1 refused" in first.stderr + first.stdout
    refused = folder_with(folders, "loss=bce", "normalization=standard")
    assert metrics_of(refused)["status"] == "refused"
    assert sum(metrics_of(p)["status"] == "completed" for p in folders.values()) == 3

    summary = summarize_cli(sweep)
    assert summary.returncode == 0
    rows = {(r["loss"], r["normalization"]): r for r in read_csv(sweep / "summary.csv")}
    assert len(rows) == 4 and rows["bce", "standard"]["status"] == "refused"
    assert "needs targets in" in rows["bce", "standard"]["error"]
    assert rows["bce", "standard"]["test/mse"] == ""
    assert ["bce", "standard", "refused"] in [r[:3] for r in printed_rows(summary.stdout)]

    # one run is unfinished (died before its first epoch ended): resume=true runs it and
    # the refused one again, and leaves the two other completed runs alone
    unfinished = folder_with(folders, "loss=mse", "normalization=standard")
    (unfinished / "metrics.json").unlink()
    (unfinished / "last.ckpt").unlink()
    assert summarize_cli(sweep).returncode == 0
    assert {r["status"] for r in read_csv(sweep / "summary.csv")} == {
        "completed", "refused", "unfinished"
    }
    finished = [p for p in folders.values() if p not in (refused, unfinished)]
    stamps = {p: (p / "metrics.json").stat().st_mtime_ns for p in finished}
    ckpts = {p: (p / "last.ckpt").stat().st_mtime_ns for p in finished}
    again = run_cli(*args, "resume=true", cwd=tmp_path)
    assert again.returncode == 0, again.stderr[-2000:]
    assert set(run_folders(sweep)) == set(folders)  # resume=true is not part of the names
    for p in finished:
        assert (p / "metrics.json").stat().st_mtime_ns == stamps[p]
        assert (p / "last.ckpt").stat().st_mtime_ns == ckpts[p]
    assert metrics_of(unfinished)["status"] == "completed"
    assert metrics_of(refused)["status"] == "refused"
    assert "skipped" in again.stderr + again.stdout


def test_a_run_that_fails_fails_the_sweep_after_the_others_ran(tmp_path):
    """Missing data is a failure, not a refused cell: the sweep runs the rest, then exits 1."""
    empty = tmp_path / "no_data"
    empty.mkdir()
    proc = run_cli("-m", "data=mnist,synthetic", *TINY[1:], f"data.root={empty}",
                   "logger=none", "hydra.sweep.dir=sweep", cwd=tmp_path)
    folders = run_folders(tmp_path / "sweep")
    assert proc.returncode == 1
    assert "1 run(s) of the sweep failed" in proc.stderr
    assert metrics_of(folder_with(folders, "data=mnist"))["status"] == "failed"
    assert "DataError" in metrics_of(folder_with(folders, "data=mnist"))["error"]
    assert metrics_of(folder_with(folders, "data=synthetic"))["status"] == "completed"


def test_a_sweep_whose_every_cell_is_refused_fails(tmp_path):
    proc = run_cli("-m", "optimizer.lr=-1,-2", *TINY, "logger=none", "hydra.sweep.dir=sweep",
                   cwd=tmp_path)
    assert proc.returncode == 1
    assert "2 run(s) of the sweep failed" in proc.stderr
    assert "optimizer.lr=-1 must be a positive number" in proc.stderr
