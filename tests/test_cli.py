"""`python -m aelab` through the real CLI: run folder, TensorBoard events, clear errors."""

import json

import pytest

from conftest import TINY, run_cli
from events import hparams_of, load_events, session_status


@pytest.fixture(scope="module")
def synthetic_run(tmp_path_factory):
    cwd = tmp_path_factory.mktemp("cli")
    overrides = [o for o in TINY if not o.startswith("trainer.max_epochs")]
    proc = run_cli(*overrides, "trainer.max_epochs=2", "hydra.run.dir=run", "loss=bce", cwd=cwd)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return cwd / "run"


def test_run_folder_holds_config_events_checkpoint_metrics(synthetic_run):
    names = {p.name for p in synthetic_run.iterdir()}
    assert {".hydra", "last.ckpt", "metrics.json"} <= names
    assert any(n.startswith("events.out.tfevents") for n in names)
    metrics = json.loads((synthetic_run / "metrics.json").read_text())
    assert metrics["status"] == "completed" and metrics["epochs"] == 2
    assert set(metrics["test"]) >= {"mse", "bce", "loss"} and metrics["wall_time_s"] > 0
    assert len(metrics["history"]["val/mse"]) == 2


def test_events_hold_curves_images_and_real_hparams(synthetic_run):
    acc = load_events(synthetic_run)
    scalars = set(acc.Tags()["scalars"])
    assert {"train/loss", "val/loss", "val/mse", "val/bce"} <= scalars
    assert len(acc.Scalars("val/mse")) == 2
    assert len(acc.Images("reconstructions")) == 2  # one grid per epoch
    assert [e.step for e in acc.Images("reconstructions")] == [1, 2]  # epochs completed
    image = acc.Images("reconstructions")[-1]
    assert image.height == 2 * 30 and image.width == 16 * 30  # inputs above reconstructions
    params, metric_tags = hparams_of(acc)
    assert params["loss"] == "bce" and params["data"] == "synthetic"
    assert "hydra" not in params and "data.name" not in params  # the data choice says it
    assert params["trainer.enable_progress_bar"] is False  # booleans stay booleans
    assert session_status(acc) == "STATUS_SUCCESS"
    assert "hp_metric" not in scalars
    assert {"final/test_mse", "final/val_bce"} <= set(metric_tags)
    metrics = json.loads((synthetic_run / "metrics.json").read_text())
    final = acc.Scalars("final/test_mse")[-1].value
    assert final == pytest.approx(metrics["test"]["mse"], rel=1e-6)


def test_offline_empty_data_root_gives_the_clear_error(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    proc = run_cli(f"data.root={empty}", "hydra.run.dir=run", cwd=tmp_path)
    assert proc.returncode == 2
    assert "Dataset 'mnist' not found" in proc.stderr
    assert str(empty / "MNIST" / "raw") in proc.stderr
    assert "AELAB_DATA_DIR" in proc.stderr and "data.download=true" in proc.stderr
    assert not (tmp_path / "run" / "last.ckpt").exists()


def test_incompatible_loss_and_normalization_refused_before_training(tmp_path):
    proc = run_cli("loss=bce", "normalization=standard", "data=synthetic", "hydra.run.dir=run",
                   cwd=tmp_path)
    assert proc.returncode == 2
    assert "loss=bce needs targets in [0, 1]" in proc.stderr
    assert "normalization=standard" in proc.stderr
    assert not (tmp_path / "run" / "last.ckpt").exists()
    assert not (tmp_path / "run" / "metrics.json").exists()


def test_off_a_terminal_the_log_has_one_short_line_per_epoch(tmp_path):
    overrides = [o for o in TINY if not o.startswith(("trainer.max_epochs", "trainer.enable_prog"))]
    proc = run_cli(*overrides, "trainer.max_epochs=3", "logger=none", "hydra.run.dir=run",
                   cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    output = proc.stdout + proc.stderr
    lines = [line for line in output.splitlines() if line.startswith("epoch ")]
    assert [line.split()[1] for line in lines] == ["1/3", "2/3", "3/3"], output
    assert all("train/loss" in line and "val/mse" in line and "steps/s" in line for line in lines)
    assert "\r" not in output and len(output.encode()) < 3 * 400, output
    assert "GPU available" not in output and "TPU available" not in output and "Tip:" not in output


def run_in_terminal(args: list[str], cwd, columns: int, timeout: float = 300) -> tuple[int, str]:
    """`python -m aelab ARGS` on a pseudo-terminal `columns` wide (0: one that reports no
    width, as some terminals do); (exit code, everything it wrote)."""
    import fcntl
    import os
    import select
    import struct
    import subprocess
    import sys
    import termios
    import time

    from conftest import DATA_DIR

    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, columns, 0, 0))
    env = {**os.environ, "AELAB_DATA_DIR": str(DATA_DIR), "PYTHONUNBUFFERED": "1"}
    env.pop("COLUMNS", None)
    proc = subprocess.Popen([sys.executable, "-m", "aelab", *args], cwd=cwd, env=env,
                            stdin=slave, stdout=slave, stderr=slave, close_fds=True)
    os.close(slave)
    out, deadline = b"", time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            if select.select([master], [], [], 0.5)[0]:
                try:
                    chunk = os.read(master, 65536)
                except OSError:  # the child closed the terminal
                    break
                if not chunk:
                    break
                out += chunk
            elif proc.poll() is not None:
                break
    finally:
        os.close(master)
        if proc.poll() is None:
            proc.kill()
    return proc.wait(), out.decode(errors="replace")


@pytest.mark.parametrize("columns", [120, 0])
def test_on_a_terminal_a_bar_and_one_line_per_epoch(tmp_path, columns):
    overrides = [o for o in TINY if not o.startswith(("trainer.max_epochs", "trainer.enable_prog"))]
    code, output = run_in_terminal([*overrides, "trainer.max_epochs=2", "logger=none",
                                    "hydra.run.dir=run"], tmp_path, columns)
    assert code == 0, output[-3000:]
    lines = [line.strip() for line in output.replace("\r", "\n").splitlines()]
    epochs = [line for line in lines if line.startswith("epoch ")]
    assert [line.split()[1] for line in epochs] == ["1/2", "2/2"], output[-3000:]
    assert all("train/loss" in line and "val/mse" in line for line in epochs)
    assert any(line.startswith("Epoch 1:") and "4/4" in line for line in lines)  # the bar
