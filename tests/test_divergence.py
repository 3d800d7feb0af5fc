"""A non-finite loss stops the run at once: status "diverged" with the last finite metrics and
likely causes, last.ckpt kept at the last finite epoch, exit 3 alone, and a sweep that goes on.

The diverging configuration is real: SGD with lr=10 on a ReLU network with an unbounded
output (normalization=standard). On the synthetic set it overflows to inf in epoch 2.
"""

import json
import math
from pathlib import Path

import pytest
import torch
from faults import faults_on_path  # noqa: F401 - autouse: subprocesses import faults

from aelab.sweeps.outcome import summarize_outcome, sweep_statuses
from aelab.training.divergence import divergence_causes
from aelab.training.run import run

from conftest import compose_config, run_cli
from events import hparams_of, load_events, session_status

SMALL = [
    "data=synthetic",
    "data.train_size=128",
    "data.val_size=64",
    "data.test_size=64",
    "data.batch_size=32",
    "trainer.enable_progress_bar=false",
    "threads=1",
    "logger=none",
]
DIVERGES = ["optimizer=sgd", "activation=relu", "normalization=standard", "optimizer.lr=10",
            "trainer.max_epochs=8"]


def finite_checkpoint(path: Path) -> dict:
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    assert all(bool(t.isfinite().all()) for t in checkpoint["state_dict"].values())
    return checkpoint


def test_a_real_divergence_stops_with_status_message_and_last_good_checkpoint(tmp_path, caplog):
    folder = tmp_path / "run"
    result = run(compose_config([*SMALL, *DIVERGES], folder))
    saved = json.loads((folder / "metrics.json").read_text())
    assert saved == result
    assert result["status"] == "diverged"
    at = result["diverged_at"]
    assert at["epoch"] >= 1, "the test needs a divergence after the first checkpoint"
    message = result["error"]
    # counted from 1, as the progress line counts epochs (diverged_at: epochs finished before)
    assert f"in epoch {at['epoch'] + 1}/8, step {at['step']} of the epoch" in message
    assert "the training loss became" in message
    assert "optimizer=sgd with optimizer.lr=10" in message and "optimizer.lr=1." in message
    assert "activation=relu with an unbounded output layer" in message
    assert f"{folder / 'last.ckpt'} holds the last finished epoch" in message
    # the last finite metrics: one entry per finished epoch, all finite
    assert result["epochs"] == at["epoch"] and result["test"] == {}
    assert all(len(v) == at["epoch"] for v in result["history"].values())
    assert all(math.isfinite(x) for v in result["history"].values() for x in v)
    assert result["val"]["mse"] == result["history"]["val/mse"][-1]
    # the checkpoint is the last finished epoch's, with finite weights
    assert result["checkpoint"] == "last.ckpt"
    assert finite_checkpoint(folder / "last.ckpt")["epoch"] == at["epoch"] - 1
    assert not (folder / ".aelab.lock").exists()

    # a diverged run is a result: resume=true leaves it alone
    with caplog.at_level("INFO", logger="aelab"):
        again = run(compose_config([*SMALL, *DIVERGES, "resume=true"], folder))
    assert again == result and "already diverged" in caplog.text


def test_non_finite_weights_at_epoch_end_never_reach_the_checkpoint(tmp_path):
    """A finite loss can still overflow the weights on an epoch's last step: the epoch-end
    check catches it before last.ckpt is written."""
    folder = tmp_path / "run"
    poison = ["+callbacks.poison._target_=faults.Poison", "+callbacks.poison.epoch=1"]
    result = run(compose_config([*SMALL, "trainer.max_epochs=3", *poison], folder))
    assert result["status"] == "diverged"
    assert "the weights became non-finite in epoch 2/3" in result["error"]
    assert result["epochs"] == 1
    assert finite_checkpoint(folder / "last.ckpt")["epoch"] == 0


def test_divergence_alone_exits_3_and_a_sweep_carries_on(tmp_path):
    single = run_cli(*SMALL, *DIVERGES, "hydra.run.dir=single", cwd=tmp_path)
    assert single.returncode == 3, single.stderr[-3000:]
    assert "aelab: training diverged: the training loss became" in single.stderr
    assert json.loads((tmp_path / "single" / "metrics.json").read_text())["status"] == "diverged"

    # lr=10 diverges, lr=0.02 crashes in epoch 1, lr=-1 is refused, lr=0.01 completes:
    # each is recorded in its own folder and the sweep goes on to the end
    crash = ["+callbacks.crash._target_=faults.Crash", "+callbacks.crash.lr=0.02"]
    sweep = run_cli("-m", *SMALL, *DIVERGES[:-2], *crash, "trainer.max_epochs=4",
                    "optimizer.lr=10,0.02,-1,0.01", "hydra.sweep.dir=sweep",
                    "hydra.sweep.subdir=${hydra.job.num}", cwd=tmp_path)  # names too long else
    runs = {
        json.loads((folder / "metrics.json").read_text())["overrides"][-1]: (status, error)
        for folder, (status, error) in sweep_statuses(tmp_path / "sweep").items()
    }
    runs = {key.removeprefix("optimizer.lr="): value for key, value in runs.items()}
    assert {lr: status for lr, (status, _) in runs.items()} == {
        "10": "diverged", "0.02": "failed", "-1": "refused", "0.01": "completed"}
    assert runs["0.02"][1] == "RuntimeError: injected crash at lr=0.02"
    assert runs["-1"][1].startswith("ConfigError: optimizer.lr=-1 must be a positive number")
    assert sweep.returncode == 1  # a run failed; diverged and refused alone would exit 0
    assert "1 run(s) of the sweep failed" in sweep.stderr
    assert "1 completed, 1 diverged, 1 failed, 1 refused" in sweep.stdout + sweep.stderr


def test_a_crash_records_failed_and_propagates(tmp_path):
    folder = tmp_path / "run"
    crash = ["+callbacks.crash._target_=faults.Crash", "+callbacks.crash.lr=0.001"]
    with pytest.raises(RuntimeError, match="injected crash"):
        run(compose_config([*SMALL, "trainer.max_epochs=3", *crash], folder))
    result = json.loads((folder / "metrics.json").read_text())
    assert result["status"] == "failed"
    assert result["error"] == "RuntimeError: injected crash at lr=0.001"
    assert result["checkpoint"] == "last.ckpt" and not (folder / ".aelab.lock").exists()


def jobs(root, runs: dict) -> dict:
    for name, metrics in runs.items():
        (root / name / ".hydra").mkdir(parents=True)
        if metrics:
            (root / name / "metrics.json").write_text(json.dumps(metrics))
    return sweep_statuses(root)


def test_sweep_outcome_counts_statuses_and_flags_failures(tmp_path):
    line, failures = summarize_outcome(jobs(tmp_path, {
        "a": {"status": "completed"}, "b": {"status": "diverged"},
        "c": {"status": "failed", "error": "DataError: bad\nmore"}, "d": None,
        "e": {"status": "refused", "error": "ConfigError: loss=bce needs targets in [0, 1]"},
    }))
    assert line == "1 completed, 1 diverged, 1 failed, 1 refused, 1 unfinished"
    assert failures == ["c: failed: DataError: bad",
                        "d: unfinished: no readable metrics.json (the job died or was refused)"]


def test_a_sweep_whose_every_run_was_refused_fails(tmp_path):
    line, failures = summarize_outcome(jobs(tmp_path, {
        "a": {"status": "refused", "error": "ConfigError: optimizer.lr=-1 must be positive"},
        "b": {"status": "refused", "error": "ConfigError: optimizer.lr=-2 must be positive"},
    }))
    assert line == "2 refused"
    assert failures == ["a: refused: ConfigError: optimizer.lr=-1 must be positive",
                        "b: refused: ConfigError: optimizer.lr=-2 must be positive"]


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (["loss=bce_clamped_probs", "loss.eps=0"], "loss=bce_clamped_probs with loss.eps=0 takes "
                                                   "the log of probabilities with no clamp"),
        (["loss=bce_unclamped_probs"], "loss=bce_unclamped_probs takes the log of "
                                       "probabilities with no clamp"),
        (["init=normal", "init.std=1"], "init=normal with init.std=1: weights that large"),
        (["loss.reduction=batch_sum"],
         "loss.reduction=batch_sum makes the gradient the pixels per image (784 for MNIST) x"),
        (["optimizer=adam", "optimizer.lr=0.5"], "optimizer=adam with optimizer.lr=0.5"),
    ],
)
def test_likely_causes_name_the_options_of_this_configuration(tmp_path, overrides, expected):
    cfg = compose_config(overrides, tmp_path)
    choices = {o.split("=")[0]: o.split("=")[1] for o in overrides if "." not in o.split("=")[0]}
    causes = divergence_causes(cfg, choices)
    assert any(expected in c for c in causes), causes
    assert any("optimizer.lr=" in c for c in causes)  # the learning rate is always a suspect


def test_a_diverged_run_is_a_failed_session_in_the_hparams_tab(tmp_path):
    folder = tmp_path / "run"
    small = [o for o in SMALL if o != "logger=none"]
    result = run(compose_config([*small, *DIVERGES], folder))
    assert result["status"] == "diverged" and result["epochs"] >= 1
    acc = load_events(folder)
    params, metric_tags = hparams_of(acc)
    assert params["optimizer.lr"] == 10 and session_status(acc) == "STATUS_FAILURE"
    assert {"final/val_mse", "final/test_mse"} <= set(metric_tags)  # the sweep's columns
    assert not any(t.startswith("final/test") for t in acc.Tags()["scalars"])  # no test values
    assert acc.Scalars("final/val_mse")[-1].value == pytest.approx(result["val"]["mse"], rel=1e-6)
