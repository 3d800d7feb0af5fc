"""A wheel (not an editable install) carries conf/ and sweeps/ and runs from any folder."""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from conftest import DATA_DIR, REPO, TINY

# no PYTHONPATH: the source tree must not be seen (nor, by pip, its aelab.egg-info)
ENV = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"} | {"AELAB_DATA_DIR": str(DATA_DIR)}


def sh(*args: str | Path, cwd: Path) -> str:
    proc = subprocess.run([str(a) for a in args], cwd=cwd, env=ENV, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, (proc.stdout[-2000:], proc.stderr[-3000:])
    return proc.stdout


@pytest.mark.slow
def test_the_wheel_installs_and_runs_without_the_source_tree(tmp_path):
    sh(sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
       "-w", tmp_path / "dist", REPO, cwd=tmp_path)
    (wheel,) = (tmp_path / "dist").glob("aelab-*.whl")
    fresh = tmp_path / "fresh"
    sh(sys.executable, "-m", "venv", "--without-pip", fresh, cwd=tmp_path)
    python = fresh / "bin" / "python"
    site = Path(sh(python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))",
                   cwd=tmp_path).strip())
    sh(sys.executable, "-m", "pip", "--python", python, "install", "-q", "--no-deps",
       "--no-index", wheel, cwd=tmp_path)
    # then torch & co. from this venv (after: pip would see this venv's aelab as installed);
    # a path line adds the folder but runs none of its .pth files: the editable aelab stays out
    (site / "deps.pth").write_text(sysconfig.get_path("purelib") + "\n")

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    where = sh(python, "-c", "import aelab.config as c; print(c.__file__); print(c.CONFIG_DIR)",
               cwd=elsewhere).split()
    assert all(Path(p).is_relative_to(site) for p in where), where
    assert (Path(where[1]) / "sweep" / "seeds.yaml").is_file()  # sweeps/ came along
    helped = sh(python, "-m", "aelab", "--help", cwd=elsewhere)
    assert "loss: " in helped and "sweep: " in helped and "seed_study" in helped
    sh(python, "-m", "aelab", *TINY, "hydra.run.dir=run", cwd=elsewhere)
    assert '"status": "completed"' in (elsewhere / "run" / "metrics.json").read_text()
