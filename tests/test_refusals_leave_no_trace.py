"""A refused rerun or resume leaves every file of the run it meets byte for byte as it was,
and `summarize` goes on labelling that run by its own record (issue 17)."""

import hashlib
from pathlib import Path

import pytest

from aelab.analysis.summarize import load_runs

from conftest import TINY, run_cli

BASE = [a for a in TINY if not a.startswith("trainer.max_epochs=")]


def hashes(folder: Path) -> dict[str, str]:
    """Every file under `folder` -> its sha256."""
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def mse_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("refusals")
    proc = run_cli(*BASE, "trainer.max_epochs=2", "hydra.run.dir=runs/R", cwd=root)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return root / "runs" / "R"


@pytest.mark.parametrize(
    "extra", [["loss=bce", "resume=true"], ["loss=bce"]], ids=["resume", "rerun"]
)
def test_refusal_changes_nothing(mse_run: Path, extra: list[str]) -> None:
    before = hashes(mse_run)
    assert {".hydra/overrides.yaml", "last.ckpt", "metrics.json"} <= set(before)
    proc = run_cli(*BASE, "trainer.max_epochs=3", *extra, f"hydra.run.dir={mse_run}",
                   cwd=mse_run.parent.parent)
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert proc.stderr.count("aelab: error:") == 1, proc.stderr[-3000:]
    assert hashes(mse_run) == before
    (run,) = load_runs(mse_run.parent)
    assert run["overrides"].get("loss") in (None, "mse")
    assert run["overrides"]["trainer.max_epochs"] == "2"


def test_missing_data_root_creates_no_folder(tmp_path: Path) -> None:
    missing = tmp_path / "missing"
    proc = run_cli("data=mnist", f"data.root={missing}", "data.download=true",
                   "hydra.run.dir=run", cwd=tmp_path, timeout=300)
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert not missing.exists()


def test_misspelt_option_lists_the_group(tmp_path: Path) -> None:
    proc = run_cli("loss=bcee", "hydra.run.dir=run", cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert proc.stderr.startswith("aelab: error: "), proc.stderr[-3000:]
    for option in ("mse", "bce", "huber", "l1"):
        assert option in proc.stderr


def test_trainer_argument_not_in_defaults_names_the_plus(tmp_path: Path) -> None:
    proc = run_cli("trainer.limit_val_batches=2", "hydra.run.dir=run", cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "+trainer.limit_val_batches=2" in proc.stderr
    assert not (tmp_path / "run").exists()
