"""Interrupted runs continue exactly: SIGKILL, SIGINT, SIGTERM, a kill during a checkpoint save;
resume=true skips finished runs; checkpoints load with weights_only and fail clearly.

Resume equality is exact (==, no tolerance): on CPU with the same thread count the
resumed run repeats the uninterrupted one bit for bit (weights, Adam state, the metric
history are in the checkpoint; the batch order and the stochastic binarisation are
seeded by (seed, epoch)).
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from faults import faults_on_path  # noqa: F401 - autouse: subprocesses import faults

from aelab.errors import CheckpointError, ConfigError
from aelab.training.run import run

from conftest import DATA_DIR, compose_config, run_cli
from events import load_events, session_status

# 16 batches an epoch, Adam, stochastic binarisation (per-batch sampling to reproduce)
BASE = [
    "data=synthetic",
    "data.train_size=512",
    "data.val_size=64",
    "data.test_size=64",
    "data.batch_size=32",
    "normalization=stochastic_binary",
    "trainer.max_epochs=5",
    "trainer.enable_progress_bar=false",
    "threads=1",
]
PACE = ["+callbacks.pace._target_=faults.Pace", "+callbacks.pace.seconds=0.05"]


def start_cli(*args: str, cwd: Path) -> subprocess.Popen:
    env = {**os.environ, "AELAB_DATA_DIR": str(DATA_DIR), "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "aelab", *args], cwd=cwd, env=env,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )


def wait_for_checkpoint(proc: subprocess.Popen, ckpt: Path, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while not ckpt.exists():
        if proc.poll() is not None:
            pytest.fail(f"run ended (rc {proc.returncode}) before a checkpoint:\n"
                        f"{proc.stdout.read()[-3000:]}")
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail("no checkpoint in time")
        time.sleep(0.02)


def metrics(folder: Path) -> dict:
    return json.loads((folder / "metrics.json").read_text())


# what may differ between a resumed run and an uninterrupted one; `choices` only because
# in-process runs are given none
EXPECTED_TO_DIFFER = ("wall_time_s", "overrides", "resumed_from_epoch", "choices")


def assert_same_results(a: dict, b: dict) -> None:
    assert a["status"] == b["status"] == "completed"
    assert a["history"] == b["history"]  # every epoch's train/val metrics, exactly
    assert a["val"] == b["val"] and a["test"] == b["test"]
    # and everything else: epochs, the diagnostics' verdict and final numbers, ...
    assert {k: v for k, v in a.items() if k not in EXPECTED_TO_DIFFER} == {
        k: v for k, v in b.items() if k not in EXPECTED_TO_DIFFER
    } or without_choices(a) == without_choices(b)


def without_choices(result: dict) -> dict:
    """`result` less what comes from Hydra's group choices, which a config composed in-process
    lacks (the diagnosis names the optimizer group it read there)."""
    kept = {k: v for k, v in result.items() if k not in EXPECTED_TO_DIFFER}
    for cause in kept.get("diagnosis", {}).get("causes", []):
        cause["evidence"].pop("optimizer", None)
    return kept


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    """The uninterrupted run, through the CLI."""
    cwd = tmp_path_factory.mktemp("reference")
    proc = run_cli(*BASE, "hydra.run.dir=ref", cwd=cwd)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return cwd / "ref"


def test_sigkill_mid_training_then_resume_matches_uninterrupted_run(reference, tmp_path):
    proc = start_cli(*BASE, *PACE, "hydra.run.dir=run", cwd=tmp_path)
    folder = tmp_path / "run"
    wait_for_checkpoint(proc, folder / "last.ckpt")
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    assert not (folder / "metrics.json").exists()  # killed mid-training, for real
    saved = torch.load(folder / "last.ckpt", map_location="cpu", weights_only=True)
    assert saved["epoch"] < 4

    resumed = run_cli(*BASE, "resume=true", "hydra.run.dir=run", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resume=true: continuing from" in (folder / "__main__.log").read_text()
    result = metrics(folder)
    assert result["resumed_from_epoch"] == saved["epoch"] + 1
    assert_same_results(result, metrics(reference))
    # one checkpoint, Lightning wrote none of its own; TensorBoard shows one curve, not two
    assert [p.name for p in folder.rglob("*.ckpt*")] == ["last.ckpt"]
    steps = [[e.step for e in load_events(f).Scalars("val/mse")] for f in (folder, reference)]
    assert steps[0] == steps[1] and len(steps[0]) == 5


def test_sigint_records_interrupted_then_resume_matches(reference, tmp_path):
    proc = start_cli(*BASE, *PACE, "hydra.run.dir=run", cwd=tmp_path)
    folder = tmp_path / "run"
    wait_for_checkpoint(proc, folder / "last.ckpt")
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 130, out[-3000:]
    interrupted = metrics(folder)
    assert interrupted["status"] == "interrupted"
    assert interrupted["checkpoint"] == "last.ckpt"
    assert "SIGINT" in interrupted["error"] and "resume=true" in interrupted["error"]
    done = interrupted["epochs"]
    assert done >= 1 and interrupted["history"]["val/mse"] == metrics(reference)["history"][
        "val/mse"][:done]

    resumed = run_cli(*BASE, "resume=true", "hydra.run.dir=run", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert_same_results(metrics(folder), metrics(reference))


def test_kill_during_checkpoint_save_keeps_previous_checkpoint(reference, tmp_path):
    kill = ["+callbacks.kill._target_=faults.KillDuringSave", "+callbacks.kill.epoch=2"]
    proc = run_cli(*BASE, *kill, "hydra.run.dir=run", cwd=tmp_path)
    folder = tmp_path / "run"
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-3000:]
    partial = folder / "last.ckpt.tmp"
    assert partial.exists()  # the save was cut short ...
    with pytest.raises(Exception):  # noqa: B017 - any load error: the half file is unreadable
        torch.load(partial, weights_only=True)
    saved = torch.load(folder / "last.ckpt", map_location="cpu", weights_only=True)
    assert saved["epoch"] == 1  # ... and last.ckpt is still the end of the epoch before

    resumed = run_cli(*BASE, "resume=true", "hydra.run.dir=run", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert_same_results(metrics(folder), metrics(reference))
    assert not partial.exists()  # the next save replaced it


def test_sigterm_records_interrupted_and_exits_143(reference, tmp_path):
    term = ["+callbacks.term._target_=faults.Signal", "+callbacks.term.epoch=2",
            "+callbacks.term.batch=0", f"+callbacks.term.signum={int(signal.SIGTERM)}"]
    folder = tmp_path / "run"
    with pytest.raises(SystemExit) as stop:
        run(compose_config([*BASE, *term], folder))
    assert stop.value.code == 143
    interrupted = metrics(folder)
    assert interrupted["status"] == "interrupted" and interrupted["epochs"] == 2
    assert "SIGTERM" in interrupted["error"]
    assert not (folder / ".aelab.lock").exists()
    assert session_status(load_events(folder)) == "STATUS_UNKNOWN"  # in the HParams tab

    result = run(compose_config([*BASE, "resume=true"], folder))
    assert_same_results(result, metrics(reference))
    acc = load_events(folder)  # the resumed run's session replaced the interrupted one's
    assert session_status(acc) == "STATUS_SUCCESS"
    assert [e.value for e in acc.Scalars("final/val_mse")] == [result["val"]["mse"]]


def copy_of(folder: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "copy"
    shutil.copytree(folder, copy)
    return copy


def test_resume_skips_a_completed_run_and_extends_one_given_more_epochs(
    reference, tmp_path, caplog
):
    folder = copy_of(reference, tmp_path)
    before = (folder / "metrics.json").read_bytes()
    with caplog.at_level("INFO", logger="aelab"):
        result = run(compose_config([*BASE, "resume=true"], folder))
    assert "already completed (5 epochs); skipped" in caplog.text
    assert result == metrics(reference)
    assert (folder / "metrics.json").read_bytes() == before

    longer = run(compose_config([*BASE, "trainer.max_epochs=6", "resume=true"], folder))
    assert longer["status"] == "completed" and longer["epochs"] == 6
    assert longer["resumed_from_epoch"] == 5
    assert longer["history"]["val/mse"][:5] == metrics(reference)["history"]["val/mse"]


def test_resume_with_other_settings_is_refused_with_the_differences(reference, tmp_path):
    folder = copy_of(reference, tmp_path)
    (folder / "metrics.json").unlink()  # as if killed after its last checkpoint
    with pytest.raises(ConfigError) as err:
        run(compose_config([*BASE, "optimizer.lr=0.01", "resume=true"], folder))
    message = str(err.value)
    assert "optimizer.lr: 0.001 in the checkpoint, 0.01 now" in message
    assert "resume=true hydra.run.dir=" in message and "normalization=stochastic_binary" in message
    assert not (folder / "metrics.json").exists()


def test_without_resume_a_used_folder_is_refused_and_left_alone(reference, tmp_path):
    folder = copy_of(reference, tmp_path)
    before = {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}
    proc = run_cli(*BASE, f"hydra.run.dir={folder}", cwd=tmp_path)
    assert proc.returncode == 2
    assert "already holds a run" in proc.stderr and "resume=true" in proc.stderr
    after = {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}
    assert {k: v for k, v in after.items() if not k.endswith(".log")} == {
        k: v for k, v in before.items() if not k.endswith(".log")
    }


def written(folder: Path) -> set[str]:
    """Files in a run folder other than Hydra's config record and the log."""
    if not folder.exists():
        return set()
    return {
        str(p.relative_to(folder)) for p in folder.rglob("*")
        if p.is_file() and ".hydra" not in p.parts and p.suffix != ".log"
    }


@pytest.mark.parametrize("damage", ["truncated", "garbage"])
def test_corrupt_checkpoint_gives_a_clear_error(reference, tmp_path, damage):
    folder = tmp_path / "run"
    folder.mkdir()
    raw = (reference / "last.ckpt").read_bytes()
    (folder / "last.ckpt").write_bytes(raw[: len(raw) // 2] if damage == "truncated" else b"x" * 99)
    with pytest.raises(CheckpointError) as err:
        run(compose_config([*BASE, "resume=true"], folder))
    message = str(err.value)
    assert str(folder / "last.ckpt") in message and "corrupt" in message
    assert "Delete" in message
    assert written(folder) == {"last.ckpt"}


class Exploit:
    def __reduce__(self):
        return (os.system, (f"touch {Path(os.environ['EXPLOIT_MARK'])}",))


def test_checkpoint_with_code_is_refused_not_run(tmp_path, monkeypatch):
    folder = tmp_path / "run"
    folder.mkdir()
    mark = tmp_path / "pwned"
    monkeypatch.setenv("EXPLOIT_MARK", str(mark))
    torch.save({"state_dict": {}, "payload": Exploit()}, folder / "last.ckpt")
    with pytest.raises(CheckpointError, match="weights_only"):
        run(compose_config([*BASE, "resume=true"], folder))
    assert not mark.exists()
