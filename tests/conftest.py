"""Shared fixtures: composed configs (real Hydra), the CLI in a subprocess, the data root."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from omegaconf import DictConfig

from aelab.config import compose_config

REPO = Path(__file__).resolve().parent.parent
DATA_DIR = Path(os.environ.get("AELAB_DATA_DIR", REPO.parent / "shared" / "data")).resolve()
os.environ["AELAB_DATA_DIR"] = str(DATA_DIR)  # in-process configs and the CLI see one root

# a tiny synthetic run: seconds, no files needed
TINY = [
    "data=synthetic",
    "data.train_size=256",
    "data.val_size=64",
    "data.test_size=64",
    "data.batch_size=64",
    "trainer.max_epochs=1",
    "trainer.enable_progress_bar=false",
    "threads=1",  # tiny nets: one thread each is fastest on a 2-core machine
]


@pytest.fixture
def make_config(tmp_path: Path) -> Callable[..., DictConfig]:
    def make(*overrides: str, name: str = "run") -> DictConfig:
        return compose_config(list(overrides), tmp_path / name)

    return make


def run_cli(*args: str, cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess:
    """`python -m aelab ARGS` in a subprocess, in `cwd`, with the test data root."""
    env = {**os.environ, "AELAB_DATA_DIR": str(DATA_DIR), "PYTHONUNBUFFERED": "1"}
    return subprocess.run(
        [sys.executable, "-m", "aelab", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture(scope="session")
def mnist_root() -> Path:
    if not (DATA_DIR / "MNIST" / "raw" / "train-images-idx3-ubyte").is_file():
        pytest.fail(f"MNIST not found under {DATA_DIR}: set AELAB_DATA_DIR")
    return DATA_DIR
