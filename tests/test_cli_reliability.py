"""What a user or a scheduler meets through the CLI (issue 29), each case in a subprocess:

1. a finished run resumed with other settings is refused (exit 2, the differences listed),
   not skipped, and its folder keeps every byte: single runs (with or without last.ckpt),
   multiruns and stacked sweeps;
2. SIGTERM / SIGINT to a sweep under hydra/launcher=stacked: exit 143 / 130, one line, no
   traceback, and the runs resume;
3. refusals that name the right fix (ddp, an accelerator the machine lacks, misspelt keys);
4. an output folder that cannot be written: refused before any work, or, made read-only
   while the run trains, the run stops with the real cause, its last.ckpt and the lock
   released;
5. resume commands that can be pasted (shell-quoted), whole sentences from torch, "1 image",
   "finite", epochs counted as the progress line counts them, the stacked plan of no run.

As root, chmod does not stop writes: the read-only cases use `chattr +i` there (tests/faults.py
read_only_means) and are skipped, with the reason, only where neither works; a folder under a
file is tested everywhere.
"""

from __future__ import annotations

import fcntl
import json
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from faults import faults_on_path, make_read_only, read_only_means, sha1s  # noqa: F401

from conftest import TINY, run_cli

BASE = [a for a in TINY if not a.startswith("trainer.max_epochs=")]
TWO = [*BASE, "trainer.max_epochs=2"]
NO_LR_IN_NAMES = "hydra.job.config.override_dirname.exclude_keys=[resume,sweep,optimizer.lr]"
NOT_EPOCHS_IN_NAMES = ("hydra.job.config.override_dirname.exclude_keys="
                       "[resume,sweep,trainer.max_epochs]")


def metrics(folder: Path) -> dict:
    return json.loads((folder / "metrics.json").read_text())


def run_folders(sweep: Path) -> list[Path]:
    return sorted(p for p in sweep.iterdir() if p.is_dir())


def one_error(proc: subprocess.CompletedProcess) -> str:
    """stderr, asserting no traceback and exactly one `aelab: error:` line start."""
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert proc.stderr.count("aelab: error:") == 1, proc.stderr[-3000:]
    return proc.stderr


def stacked_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "aelab.stacked", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=600)


# --- 1. a finished run resumed with other settings ----------------------------------------


@pytest.mark.parametrize("checkpoint", [True, False], ids=["last.ckpt", "no-checkpoint"])
def test_a_completed_run_resumed_with_other_settings_is_refused_not_skipped(tmp_path,
                                                                           checkpoint):
    plain = [] if checkpoint else ["~callbacks.checkpoint"]
    assert run_cli(*TWO, *plain, "hydra.run.dir=D", cwd=tmp_path).returncode == 0
    folder = tmp_path / "D"
    assert (folder / "last.ckpt").exists() == checkpoint
    before = sha1s(folder)

    proc = run_cli(*TWO, *plain, "resume=true", "loss=bce", "hydra.run.dir=D", cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr[-3000:]
    message = one_error(proc)
    assert f"{folder} holds a completed run with other settings" in message
    source = "the checkpoint" if checkpoint else "its .hydra/config.yaml"
    assert f"loss._target_: aelab.losses.MSE in {source}, aelab.losses.BCE now" in message
    assert "skipped" not in proc.stdout + proc.stderr
    assert sha1s(folder) == before  # the MSE run, byte for byte

    same = run_cli(*TWO, *plain, "resume=true", "hydra.run.dir=D", cwd=tmp_path)
    assert same.returncode == 0 and "already completed (2 epochs); skipped" in same.stdout


def test_a_sweep_resumed_with_a_key_its_folder_names_leave_out_is_refused(tmp_path):
    sweep = ["-m", *BASE, "trainer.max_epochs=1", "seed=0,1", NO_LR_IN_NAMES,
             "hydra.sweep.dir=S"]
    assert run_cli(*sweep, cwd=tmp_path).returncode == 0
    folders = run_folders(tmp_path / "S")
    before = {f: sha1s(f) for f in folders}

    proc = run_cli(*sweep, "optimizer.lr=1e-2", "resume=true", cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr[-3000:]
    out = proc.stdout + proc.stderr
    assert "Traceback" not in out
    assert out.count("optimizer.lr: 0.001 in the checkpoint, 0.01 now") == 2
    assert "sweep S: 2 refused (left as they were)" in out and "2 completed" not in out
    assert "2 run(s) of the sweep were refused, their folders left as they were" in proc.stderr
    assert {f: sha1s(f) for f in folders} == before  # no "refused" written over the results
    assert [p.name for p in (tmp_path / "S").iterdir() if p.name.startswith(".")] == []


@pytest.mark.parametrize("how", ["launcher", "aelab.stacked"])
def test_a_stacked_sweep_resumed_with_other_settings_is_refused(tmp_path, how):
    common = [*BASE, "trainer.max_epochs=1", "logger=none", "seed=0,1", NO_LR_IN_NAMES,
              f"hydra.sweep.dir={tmp_path / 'S'}"]

    def sweep(*extra: str) -> subprocess.CompletedProcess:
        if how == "launcher":
            return run_cli("-m", *common, "hydra/launcher=stacked", *extra, cwd=tmp_path)
        return stacked_cli(*common, *extra, cwd=tmp_path)

    assert sweep().returncode == 0
    folders = run_folders(tmp_path / "S")
    before = {f: sha1s(f) for f in folders}
    proc = sweep("optimizer.lr=1e-2", "resume=true")
    assert proc.returncode == 2, proc.stderr[-3000:]
    out = proc.stdout + proc.stderr
    assert "Traceback" not in out
    assert out.count("optimizer.lr: 0.001 in the checkpoint, 0.01 now") == 2
    assert "2 refused (left as they were)" in out
    assert {f: sha1s(f) for f in folders} == before

    again = sweep("resume=true")  # the same settings: skipped, and nothing left to plan
    assert again.returncode == 0, again.stderr[-3000:]
    assert "stacked plan: no run to train" in again.stdout
    assert "0 runs" not in again.stdout and "none runs" not in again.stdout


# --- 2. SIGTERM and SIGINT through the stacked launcher ------------------------------------


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_stacked_launcher_sweep_stops_with_one_line_and_resumes(tmp_path, signum):
    sweep = tmp_path / "sweep"
    common = ["-m", *BASE, "logger=none", "seed=0,1", "hydra/launcher=stacked",
              f"hydra.sweep.dir={sweep}", NOT_EPOCHS_IN_NAMES]
    proc = subprocess.Popen([sys.executable, "-m", "aelab", *common, "trainer.max_epochs=500"],
                            cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    deadline = time.monotonic() + 180
    while not (sweep.is_dir() and len(list(sweep.glob("*/last.ckpt"))) == 2):
        assert time.monotonic() < deadline and proc.poll() is None, proc.communicate()
        time.sleep(0.2)
    proc.send_signal(signum)
    _, err = proc.communicate(timeout=120)
    name = signal.Signals(signum).name
    assert proc.returncode == 128 + signum, err[-3000:]
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err[-3000:]
    lines = [line for line in err.splitlines() if line.startswith("aelab:")]
    assert lines == [f"aelab: interrupted ({name}); rerun the same command with resume=true "
                     f"to continue (each run from its last.ckpt)"]
    stopped = [metrics(folder) for folder in run_folders(sweep)]
    assert [r["status"] for r in stopped] == ["interrupted"] * 2
    assert all(1 <= r["epochs"] < 500 for r in stopped)

    epochs = max(r["epochs"] for r in stopped) + 1
    resumed = run_cli(*common, f"trainer.max_epochs={epochs}", "resume=true", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    for folder in run_folders(sweep):
        done = metrics(folder)
        assert done["status"] == "completed" and done["epochs"] == epochs
        assert done["resumed_from_epoch"] >= 1


# --- 3. refusals that name the fix -----------------------------------------------------------


@pytest.mark.parametrize(
    ("override", "says", "never"),
    [
        ("+trainer.strategy=ddp", "remove +trainer.strategy=ddp", "set trainer.devices=1"),
        ("loss.reducton=sum", "(did you mean loss.reduction?)", "+loss.reducton"),
        ("trainer.max_epoch=3", "(did you mean trainer.max_epochs?)", "+trainer.max_epoch"),
        ("optimizer.lrr=0.1", "(did you mean optimizer.lr?)", "+optimizer.lrr"),
        ("trainer.accelerator=gpu", "trainer.accelerator=gpu asks for a device this machine "
                                    "does not have; use trainer.accelerator=auto",
         "change the trainer.* option it names"),
    ],
)
def test_refusals_name_the_fix(tmp_path, override, says, never):
    if override == "trainer.accelerator=gpu" and torch.cuda.is_available():
        pytest.skip("this machine has a GPU: trainer.accelerator=gpu is no mistake here")
    proc = run_cli(*BASE, override, "hydra.run.dir=run", cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr[-3000:]
    message = one_error(proc)
    assert says in message and never not in message
    assert not (tmp_path / "run" / "metrics.json").exists()


# --- 4. an output folder that cannot be written ---------------------------------------------


def test_a_run_folder_under_a_file_is_refused_before_hydra(tmp_path):
    (tmp_path / "file").write_text("not a folder")
    for args in (["hydra.run.dir=file/run"], ["-m", "seed=0,1", "hydra.sweep.dir=file/sweep"]):
        proc = run_cli(*BASE, *args, cwd=tmp_path)
        assert proc.returncode == 2, proc.stderr[-3000:]
        assert "cannot be written (file is a file, not a folder)" in one_error(proc)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]


@pytest.fixture
def read_only():
    """make_read_only(folder), undone after the test (so that tmp_path can be removed)."""
    if read_only_means() is None:
        pytest.skip("root here, and chattr +i does not work: no folder can be made "
                    "unwritable to this process (the folder-under-a-file case still runs)")
    made: list[Path] = []

    def make(folder: Path) -> None:
        make_read_only(folder)
        made.append(folder)

    yield make
    for folder in made:
        make_read_only(folder, read_only=False)


def test_a_read_only_run_folder_is_refused_and_left_alone(tmp_path, read_only):
    assert run_cli(*TWO, "hydra.run.dir=D", cwd=tmp_path).returncode == 0
    folder, parent = tmp_path / "D", tmp_path / "parent"
    parent.mkdir()
    before = sha1s(folder)
    read_only(folder)
    read_only(parent)
    for args in (["hydra.run.dir=D", "resume=true", "trainer.max_epochs=3"],
                 ["hydra.run.dir=parent/run"],
                 ["-m", "seed=0,1", "hydra.sweep.dir=parent/sweep"]):
        proc = run_cli(*BASE, *args, cwd=tmp_path)
        assert proc.returncode == 2, proc.stderr[-3000:]
        message = one_error(proc)
        assert "aelab: error: run folder " in message and "cannot be written" in message
        named = next(a for a in args if a.startswith("hydra.")).partition("=")[2]
        assert f"run folder {named} cannot be written" in message
    assert sha1s(folder) == before
    assert list(parent.iterdir()) == []


def test_a_folder_made_read_only_mid_run_stops_with_the_cause_and_keeps_the_checkpoint(
        tmp_path, read_only):
    folder, manifest = tmp_path / "run", tmp_path / "manifest.json"
    fault = ["+callbacks.ro._target_=faults.ReadOnly", "+callbacks.ro.epoch=1",
             f"+callbacks.ro.folder={folder}", f"+callbacks.ro.manifest={manifest}"]
    try:  # the `read_only` fixture: skipped where no folder can be made unwritable
        proc = run_cli(*BASE, "trainer.max_epochs=3", *fault, "hydra.run.dir=run",
                       cwd=tmp_path)
        assert proc.returncode == 1, proc.stderr[-3000:]
        message = one_error(proc)
        assert f"run folder {folder} can no longer be written" in message
        assert "last.ckpt.tmp" in message and ("Permission" in message or
                                                "not permitted" in message)
        assert f"{folder / 'last.ckpt'} holds the last finished epoch" in message
        assert "FileNotFoundError" not in message
        at_read_only = json.loads(manifest.read_text())
        now = sha1s(folder)
        assert set(now) == set(at_read_only)  # nothing new: no metrics.json, no .tmp
        kept = [name for name in now if name.startswith((".hydra", "last.ckpt", "hparams"))]
        assert "last.ckpt" in kept and all(now[n] == at_read_only[n] for n in kept)
        saved = torch.load(folder / "last.ckpt", map_location="cpu", weights_only=True)
        assert saved["epoch"] == 0  # the last good checkpoint: the epoch before
    finally:
        make_read_only(folder, read_only=False)
    with open(folder / ".aelab.lock", "rb") as lock:  # the lock is released
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        fcntl.flock(lock, fcntl.LOCK_UN)
    resumed = run_cli(*BASE, "trainer.max_epochs=3", "resume=true", "hydra.run.dir=run",
                      cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert metrics(folder)["status"] == "completed" and metrics(folder)["epochs"] == 3
    assert not (folder / ".aelab.lock").exists()


# --- 5. what a user pastes or reads ----------------------------------------------------------


def pasted(command: str, cwd: Path) -> subprocess.CompletedProcess:
    """Run a printed `python -m aelab ...` command as a shell would split it."""
    args = shlex.split(command)
    assert args[:3] == ["python", "-m", "aelab"], args
    return run_cli(*args[3:], cwd=cwd)


def test_printed_resume_commands_survive_a_space_in_the_folder(tmp_path):
    folder = tmp_path / "my runs" / "R"
    term = ["+callbacks.term._target_=faults.Signal", "+callbacks.term.epoch=1",
            f"+callbacks.term.signum={int(signal.SIGTERM)}"]
    proc = run_cli(*BASE, "trainer.max_epochs=3", *term, f"hydra.run.dir={folder}",
                   cwd=tmp_path)
    assert proc.returncode == 143, proc.stderr[-3000:]
    error = metrics(folder)["error"]
    assert f"'hydra.run.dir={folder}'" in error
    hint = error.split("Continue with the same command plus ")[1].rstrip(".")
    resumed = run_cli(*BASE, "trainer.max_epochs=3", *shlex.split(hint), cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert metrics(folder)["status"] == "completed"

    refused = run_cli(*BASE, "trainer.max_epochs=3", "loss=bce", "resume=true",
                      f"hydra.run.dir={folder}", cwd=tmp_path)
    assert refused.returncode == 2, refused.stderr[-3000:]
    command = refused.stderr.split("Resume it with its own overrides: ")[1].splitlines()[0]
    assert f"'hydra.run.dir={folder}'" in command
    assert pasted(command, tmp_path).returncode == 0  # its own settings: skipped, completed


@pytest.mark.parametrize(
    ("damage", "reason"),
    [("truncated", "PytorchStreamReader failed reading zip archive: failed finding central "
                   "directory.) Delete"),
     ("garbage", "(torch: Unsupported operand 120.) Delete")],
)
def test_a_corrupt_checkpoint_message_keeps_torchs_sentence_whole(tmp_path, damage, reason):
    assert run_cli(*TWO, "~callbacks.reconstructions", "hydra.run.dir=ref",
                   cwd=tmp_path).returncode == 0
    folder = tmp_path / "run"
    folder.mkdir()
    raw = (tmp_path / "ref" / "last.ckpt").read_bytes()
    (folder / "last.ckpt").write_bytes(raw[: len(raw) // 2] if damage == "truncated"
                                       else b"x" * 99)
    proc = run_cli(*TWO, "~callbacks.reconstructions", "resume=true", "hydra.run.dir=run",
                   cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr[-3000:]
    message = one_error(proc)
    assert reason in message and "Weights only load failed" not in message


@pytest.mark.parametrize(
    ("overrides", "says"),
    [(["data.train_size=1", "data.batch_size=2"], "larger than the training set (1 image);"),
     (["optimizer.lr=inf"], "optimizer.lr=inf must be a positive number and finite"),
     (["l2_penalty=inf"], "l2_penalty=inf must be a number >= 0 and finite (inf is not)")],
)
def test_messages_read_right(tmp_path, overrides, says):
    proc = run_cli(*TWO, *overrides, "hydra.run.dir=run", cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert says in one_error(proc)


def test_the_divergence_message_counts_epochs_as_the_progress_lines_do(tmp_path):
    diverges = ["data.train_size=128", "data.batch_size=32", "logger=none", "optimizer=sgd",
                "activation=relu", "normalization=standard", "optimizer.lr=10",
                "trainer.max_epochs=8"]
    shown = [a for a in BASE if not a.startswith(("trainer.enable_progress_bar",
                                                   "data.train_size", "data.batch_size"))]
    proc = run_cli(*shown, *diverges, "hydra.run.dir=run", cwd=tmp_path)
    assert proc.returncode == 3, proc.stderr[-3000:]
    at = metrics(tmp_path / "run")["diverged_at"]["epoch"]  # finished epochs before it
    lines = [line.split()[1] for line in proc.stdout.splitlines() if line.startswith("epoch ")]
    assert lines == [f"{n}/8" for n in range(1, at + 1)]  # the epochs that finished
    assert f"in epoch {at + 1}/8, step" in proc.stderr
