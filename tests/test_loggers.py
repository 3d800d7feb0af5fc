"""Every shipped logger (tensorboard: test_tensorboard_ui; csv, wandb, none) and any Lightning
logger by `logger._target_`: the run completes, with its verdict, and the logger's own files
hold the scalars; a logger that cannot hold aelab's images or HParams session skips them, and
one that fails at the end does not undo the run."""

from __future__ import annotations

import csv
import json
import os
import struct
from pathlib import Path

import pytest
from lightning.pytorch.loggers import Logger

from aelab.config.validate import validate
from aelab.errors import ConfigError
from aelab.training.run import run

from conftest import TINY, compose_config, run_cli

TWO_EPOCHS = [o for o in TINY if not o.startswith("trainer.max_epochs")] + ["trainer.max_epochs=2"]


def completed(folder: Path) -> dict:
    result = json.loads((folder / "metrics.json").read_text())
    assert result["status"] == "completed" and result["verdict"], result.get("error")
    return result


def test_csv_logger_holds_train_loss_and_val_mse_per_epoch(tmp_path):
    proc = run_cli(*TWO_EPOCHS, "logger=csv", "hydra.run.dir=run", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = completed(tmp_path / "run")
    logs = tmp_path / "run" / "csv" / "version_0"
    with open(logs / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))

    def per_epoch(key: str) -> list[float]:
        return [float(r[key]) for r in rows if r.get(key)]

    assert per_epoch("train/loss") == pytest.approx(result["history"]["train/loss"], rel=1e-6)
    assert per_epoch("val/mse") == pytest.approx(result["history"]["val/mse"], rel=1e-6)
    assert len(per_epoch("blob/ev")) == 3  # the diagnostics: initialisation and 2 epochs
    assert per_epoch("final/ev") == pytest.approx([result["diagnostics"]["blob/ev"]])
    assert per_epoch("final/test_mse") == pytest.approx([result["test"]["mse"]])
    hparams = (logs / "hparams.yaml").read_text()
    assert f"verdict: {result['verdict']}" in hparams and "status: completed" in hparams


def wandb_history(run_file: Path) -> dict[str, list[float]]:
    """The scalars of a W&B run file (its LevelDB-style log of protobuf records)."""
    from wandb.proto import wandb_internal_pb2 as pb

    data, block = run_file.read_bytes(), 32768
    assert data[:4] == b":W&B"
    pos, pending, history = 7, b"", {}
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # a block's tail too short for a header is padding
            pos += block - pos % block
            continue
        _, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        if kind == 0:
            pos += block - pos % block
            continue
        pending, pos = pending + data[pos + 7:pos + 7 + length], pos + 7 + length
        if kind in (1, 4):  # a full record, or the last piece of one
            record = pb.Record.FromString(pending)
            pending = b""
            for item in record.history.item if record.HasField("history") else []:
                value = json.loads(item.value_json)
                if isinstance(value, (int, float)):  # "a/b" keys come as nested keys
                    key = item.key or "/".join(item.nested_key)
                    history.setdefault(key, []).append(value)
    return history


def test_wandb_logger_runs_offline_into_the_run_folder(tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    for name in [k for k in os.environ if k.startswith("WANDB_")]:
        monkeypatch.delenv(name)  # offline unless the user says otherwise
    proc = run_cli(*TWO_EPOCHS, "logger=wandb", "hydra.run.dir=run", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = completed(tmp_path / "run")
    (run_file,) = (tmp_path / "run" / "wandb").glob("offline-run-*/run-*.wandb")
    history = wandb_history(run_file)
    assert history["train/loss"] == pytest.approx(result["history"]["train/loss"], rel=1e-6)
    assert history["val/mse"] == pytest.approx(result["history"]["val/mse"], rel=1e-6)
    assert history["final/ev"] == pytest.approx([result["diagnostics"]["blob/ev"]])
    media = run_file.parent / "files" / "media" / "images"
    assert list(media.glob("reconstructions_*.png"))  # the images W&B can hold


def test_logger_none_writes_no_logger_files(tmp_path):
    result = run(compose_config([*TINY, "logger=none"], tmp_path / "run"))
    assert result["status"] == "completed"
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["last.ckpt", "metrics.json"]


def test_any_lightning_logger_by_target(tmp_path):
    """TensorBoard's default_hp_metric is no CSVLogger option: refused at once, naming it;
    without it the run completes into the CSVLogger's files."""
    target = "logger._target_=lightning.pytorch.loggers.CSVLogger"
    with pytest.raises(ConfigError, match="default_hp_metric"):
        validate(compose_config([*TINY, target], tmp_path / "refused"))
    assert not (tmp_path / "refused").exists()
    folder = tmp_path / "run"
    run(compose_config([*TINY, target, "~logger.default_hp_metric"], folder))
    completed(folder)
    with open(folder / "metrics.csv", newline="") as f:
        assert any(r.get("val/mse") for r in csv.DictReader(f))


class BrokenLogger(Logger):
    """A logger whose end fails: log_hyperparams raises."""

    name, version = "broken", 0
    logged: list[dict] = []

    def __init__(self, **options) -> None:  # TensorBoard's save_dir, name, ...: ignored
        super().__init__()

    def log_metrics(self, metrics, step=None) -> None:
        BrokenLogger.logged.append(dict(metrics))

    def log_hyperparams(self, params, *args, **kwargs) -> None:
        raise RuntimeError("the server went away")


def test_a_logger_failing_at_the_end_leaves_the_run_completed(tmp_path, caplog):
    folder = tmp_path / "run"
    result = run(compose_config([*TINY, f"logger._target_={__name__}.BrokenLogger"], folder))
    assert result["status"] == "completed" and completed(folder)["verdict"]
    assert "could not record the run's end" in caplog.text and "server went away" in caplog.text
    assert any("val/mse" in m for m in BrokenLogger.logged)
    assert any("blob/ev" in m for m in BrokenLogger.logged)  # the diagnostics' scalars too


def test_wandb_without_its_package_is_refused_naming_the_extra(tmp_path, monkeypatch):
    import importlib.util

    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "wandb" else find_spec(name, *a))
    with pytest.raises(ConfigError, match=r"pip install 'aelab\[wandb\]'"):
        validate(compose_config([*TINY, "logger=wandb"], tmp_path / "run"))


def test_shipped_loggers_are_the_group_options():
    from aelab.config import CONFIG_DIR

    shipped = sorted(p.stem for p in (Path(CONFIG_DIR) / "logger").glob("*.yaml"))
    assert shipped == ["csv", "none", "tensorboard", "wandb"]


def test_hparams_are_flattened_and_typed_for_the_table_without_lightning_privates():
    from argparse import Namespace

    import torch

    from aelab.training.loggers import plain_params, session_value

    nested = {"a": {"b": 1, "c": {"d": "x"}}, "e": Namespace(f=2.5), "g": {}, "h": None}
    assert plain_params(nested) == {"a/b": 1, "a/c/d": "x", "e/f": 2.5, "g": {}, "h": None}
    assert plain_params(Namespace(lr=0.1)) == {"lr": 0.1} and plain_params(None) == {}
    assert session_value("data.batch_size", 128) == "128"  # a count: shown as 128
    assert session_value("seed", 0) == "0" and session_value("optimizer.lr", 10) == 10
    assert session_value("flag", True) is True and session_value("x", 0.5) == 0.5
    assert session_value("model.hidden", [100, 50]) == "[100, 50]"
    assert session_value("beta", torch.tensor(2.0)) == 2.0 and session_value("k", None) is None


def test_event_checksums_in_c_equal_tensorboards_and_files_read_back(tmp_path):
    """aelab's TensorBoard logger checksums records with google-crc32c: the same numbers as
    TensorBoard's pure-Python masked_crc32c (on known and random data), and an events file
    written so reads back, every record's checksums verified by TensorBoard's own reader."""
    import random

    import torch
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.compat.tensorflow_stub import errors
    from tensorboard.compat.tensorflow_stub.pywrap_tensorflow import (
        PyRecordReader_New,
        masked_crc32c,
    )
    from tensorboard.summary.writer import record_writer

    from aelab.diagnostics.images import add_png_image
    from aelab.training.loggers import TensorBoardLogger, _masked_crc32c

    rng = random.Random(0)
    for n in (0, 1, 7, 8, 1000, 110_000):
        data = bytes(rng.getrandbits(8) for _ in range(n))
        assert _masked_crc32c(data) == masked_crc32c(data), n
    assert _masked_crc32c(b"123456789") != _masked_crc32c(b"123456780")
    logger = TensorBoardLogger(save_dir=str(tmp_path), name="", version="")
    assert record_writer.masked_crc32c is _masked_crc32c
    add_png_image(logger.experiment, "img", torch.rand(40, 30), 3)
    logger.experiment.add_scalar("x", 1.5, 3)
    logger.finalize("success")
    records = 0
    for path in tmp_path.glob("events.out.tfevents.*"):
        reader = PyRecordReader_New(str(path))
        while True:
            try:
                reader.GetNext()  # raises DataLossError on a wrong checksum
            except errors.OutOfRangeError:
                break
            records += 1
    assert records >= 3  # the file version, the image, the scalar
    acc = EventAccumulator(str(tmp_path))
    acc.Reload()
    assert acc.Scalars("x")[0].value == 1.5 and acc.Images("img")[0].width == 30
