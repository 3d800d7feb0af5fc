"""The diagnosis at the end of every run (single, stacked, VAE), `python -m aelab.doctor` on a
run and on a sweep folder, and `--treat`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from aelab.doctor.treat import fixes_of, slug, with_fix

from conftest import DATA_DIR, REPO, TINY, run_cli


def doctor(*args: str, cwd: Path, timeout: float = 900) -> subprocess.CompletedProcess:
    env = {**os.environ, "AELAB_DATA_DIR": str(DATA_DIR), "PYTHONUNBUFFERED": "1"}
    return subprocess.run([sys.executable, "-m", "aelab.doctor", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def penalised(tmp_path_factory) -> Path:
    """A tiny synthetic run whose W1 a strong L2 penalty collapses (4 epochs)."""
    folder = tmp_path_factory.mktemp("penalised") / "run"
    proc = run_cli(*TINY, "trainer.max_epochs=4", "data.train_size=512", "l2_penalty=0.05",
                   "activation=relu", f"hydra.run.dir={folder}", cwd=folder.parent)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "doctor: collapsed" in proc.stdout + proc.stderr
    return folder


def test_a_run_writes_and_prints_its_diagnosis(penalised):
    result = json.loads((penalised / "metrics.json").read_text())
    diagnosis = result["diagnosis"]
    assert diagnosis["symptom"] == result["verdict"] == "collapsed"
    first = diagnosis["causes"][0]
    assert first["cause"] == "penalty" and first["fix"] == ["l2_penalty=0"]
    assert {"grads/data/W1", "grads/penalty/W1", "penalty/data"} <= set(first["evidence"])
    assert first["evidence"]["grads/penalty/W1"] > first["evidence"]["grads/data/W1"]
    assert result["preflight"]["problems"] == []  # mse passes the check before training


def test_the_doctor_cli_rediagnoses_a_folder_in_well_under_two_seconds(penalised, tmp_path):
    started = time.perf_counter()
    proc = doctor(str(penalised), "--no-write", cwd=tmp_path)
    elapsed = time.perf_counter() - started
    assert proc.returncode == 0, proc.stderr
    assert "doctor: collapsed" in proc.stdout and "1. penalty" in proc.stdout
    assert "fix: l2_penalty=0" in proc.stdout
    assert elapsed < 2.0, f"{elapsed:.2f} s"  # the interpreter included; no torch is imported
    assert doctor(str(tmp_path), cwd=tmp_path).returncode == 2  # no run there


def test_stacked_runs_and_a_vae_get_a_diagnosis_and_a_sweep_folder_a_table(tmp_path):
    sweep = tmp_path / "sweep"
    env = {**os.environ, "AELAB_DATA_DIR": str(DATA_DIR)}
    proc = subprocess.run(
        [sys.executable, "-m", "aelab.stacked", *TINY, "l2_penalty=0,0.05", "activation=relu",
         "trainer.max_epochs=2", f"hydra.sweep.dir={sweep}"], cwd=tmp_path, env=env,
        capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-2000:]
    vae = run_cli(*TINY, "model=vae", "model.hidden=[64,8]", "activation=relu", "loss=bce",
                  "model.iwae_samples=2", f"hydra.run.dir={sweep / 'vae'}", cwd=tmp_path)
    assert vae.returncode == 0, vae.stderr[-2000:]
    runs = sorted(p.parent for p in sweep.rglob("metrics.json"))
    assert len(runs) == 3
    for run in runs:
        result = json.loads((run / "metrics.json").read_text())
        assert result["diagnosis"]["symptom"] == result["verdict"], run
    vae_result = json.loads((sweep / "vae" / "metrics.json").read_text())
    assert "latent/kl_total" in vae_result["diagnostics"]
    table = doctor(str(sweep), cwd=tmp_path)
    assert table.returncode == 0 and table.stdout.count("\n| ") == 4  # header rule + 3 runs


def test_fixes_apply_over_the_runs_own_overrides():
    assert with_fix(["l2_penalty=1e-3", "trainer.max_epochs=5", "hydra.run.dir=x"],
                    "l2_penalty=0") == ["trainer.max_epochs=5", "l2_penalty=0"]
    assert with_fix(["optimizer=sgd", "optimizer.lr=0.001", "seed=2"], "optimizer=adam") == [
        "seed=2", "optimizer=adam"]
    assert slug("l2_penalty=0 optimizer.lr=0.01") == "l2_penalty=0+optimizer.lr=0.01"
    diagnosis = {"causes": [{"fix": ["loss=bce"]}, {"fix": ["l2_penalty=0", "loss=bce"]},
                            {"fix": ["replace the ReLU at h2 by a LeakyReLU"]}]}
    assert fixes_of(diagnosis) == ["loss=bce", "l2_penalty=0"]


def test_treat_reruns_with_the_fix_and_prints_the_table(penalised, tmp_path):
    proc = doctor(str(penalised), "--treat", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rerun = penalised / "treat" / "l2_penalty=0"
    result = json.loads((rerun / "metrics.json").read_text())
    assert result["overrides"][-1] == "l2_penalty=0" and result["epochs"] == 4
    assert "| run | fix | symptom before -> after |" in proc.stdout
    assert "`l2_penalty=0` | collapsed -> " in proc.stdout
    treated = json.loads((penalised / "metrics.json").read_text())["treatment"]
    assert treated[0]["fix"] == "l2_penalty=0" and treated[0]["symptom_after"] != "collapsed"


@pytest.mark.slow
def test_the_issues_penalty_run_on_mnist_is_diagnosed_and_healed(tmp_path, mnist_root):
    """`python -m aelab l2_penalty=1e-3 trainer.max_epochs=5 data.train_size=10000`."""
    folder = tmp_path / "run"
    proc = run_cli("l2_penalty=1e-3", "trainer.max_epochs=5", "data.train_size=10000",
                   "threads=1", "logger=none", f"hydra.run.dir={folder}", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    first = json.loads((folder / "metrics.json").read_text())["diagnosis"]["causes"][0]
    assert first["cause"] == "penalty" and "l2_penalty" in first["fix"][0]
    assert first["evidence"]["grads/penalty/W1"] > first["evidence"]["grads/data/W1"] > 0
    treat = doctor(str(folder), "--treat", cwd=tmp_path)
    assert treat.returncode == 0, treat.stderr[-3000:]
    rows = json.loads((folder / "metrics.json").read_text())["treatment"]
    assert any(r["healed"] for r in rows if "l2_penalty=0" in r["fix"]), rows


def test_the_package_is_importable_without_the_doctor_pulling_torch(tmp_path):
    code = "import sys, aelab.doctor.diagnose, aelab.doctor.__main__; print('torch' in sys.modules)"
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert proc.stdout.strip() == "False", proc.stderr
