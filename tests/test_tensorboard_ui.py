"""What a person sees in the real TensorBoard UI over a 2-run sweep and one diverged run: the
`tensorboard` server started on 127.0.0.1, asked through the HTTP API its pages use."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tensorboard.plugins.hparams import api_pb2

from aelab.training.loggers import SESSION_STATUS, session_summaries

from conftest import TINY, run_cli

TENSORBOARD = Path(sys.executable).with_name("tensorboard")
DIVERGES = ["optimizer=sgd", "activation=relu", "normalization=standard", "optimizer.lr=10",
            "trainer.max_epochs=8"]
PNG = b"\x89PNG\r\n\x1a\n"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """A running TensorBoard at http://127.0.0.1:port."""

    def __init__(self, port: int, logdir: Path) -> None:
        self.base = f"http://127.0.0.1:{port}"
        self.logdir = logdir

    def get(self, path: str, body: dict | None = None) -> bytes:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.base + path, data=data,
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.read()

    def json(self, path: str, body: dict | None = None) -> Any:
        return json.loads(self.get(path, body))

    def session_groups(self) -> list[dict]:
        request = {"experimentName": "", "allowedStatuses": list(api_pb2.Status.keys()),
                   "colParams": [], "startIndex": 0, "sliceSize": 100}
        return self.json("/data/plugin/hparams/session_groups", request)["sessionGroups"]


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Iterator[Server]:
    cwd = tmp_path_factory.mktemp("tb")
    sweep = run_cli("-m", *TINY, "loss=mse,bce", "hydra.sweep.dir=logs/sweep", cwd=cwd)
    assert sweep.returncode == 0, sweep.stderr[-3000:]
    tiny = [o for o in TINY if not o.startswith("trainer.max_epochs")]
    diverged = run_cli(*tiny, *DIVERGES, "hydra.run.dir=logs/diverged", cwd=cwd)
    assert diverged.returncode == 3, diverged.stderr[-3000:]
    port = free_port()
    with open(cwd / "tensorboard.log", "w") as log:  # the child keeps its own descriptor
        proc = subprocess.Popen(
            [str(TENSORBOARD), "--logdir", str(cwd / "logs"), "--host", "127.0.0.1",
             "--port", str(port), "--load_fast=false", "--reload_interval=1"],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
    try:
        tb = Server(port, cwd / "logs")
        for _ in range(120):  # up to a minute: answers, and has loaded all three runs
            try:
                if len(tb.json("/data/runs")) == 3 and len(tb.session_groups()) == 3:
                    break
            except (urllib.error.URLError, ConnectionError, json.JSONDecodeError):
                pass
            assert proc.poll() is None, (cwd / "tensorboard.log").read_text()[-3000:]
            time.sleep(0.5)
        else:
            pytest.fail("TensorBoard did not serve the three runs within a minute")
        yield tb
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def sweep_run(runs: list[str], loss: str) -> str:
    (name,) = [r for r in runs if r.startswith("sweep/") and f"loss={loss}," in r]
    return name


def test_runs_scalars_and_images_as_the_ui_shows_them(server):
    runs = server.json("/data/runs")
    assert "diverged" in runs and {sweep_run(runs, "mse"), sweep_run(runs, "bce")} <= set(runs)
    scalars = server.json("/data/plugin/scalars/tags")
    images = server.json("/data/plugin/images/tags")
    for run in runs:
        assert {"train/loss", "val/loss", "val/mse", "val/bce"} <= set(scalars[run])
        assert {"reconstructions", "collapse/W1_filters"} <= set(images[run])
    run = sweep_run(runs, "bce")
    for tag in ("reconstructions", "collapse/W1_filters"):
        query = urllib.parse.urlencode({"run": run, "tag": tag})
        *_, last = server.json(f"/data/plugin/images/images?{query}")  # one per step written
        png = server.get(f"/data/plugin/images/individualImage?{last['query']}")
        assert png.startswith(PNG) and len(png) > 100


def test_hparams_tab_holds_every_run_its_values_metrics_and_status(server):
    runs = server.json("/data/runs")
    groups = {g["name"]: g for g in server.session_groups()}
    assert set(groups) == set(runs)
    for loss in ("mse", "bce"):
        group = groups[sweep_run(runs, loss)]
        result = json.loads((server.logdir / sweep_run(runs, loss) / "metrics.json").read_text())
        assert group["hparams"]["loss"] == loss and group["hparams"]["data"] == "synthetic"
        assert group["hparams"]["trainer.enable_progress_bar"] is False
        assert "hydra" not in group["hparams"] and "data.name" not in group["hparams"]
        # the verdict as a category; counts as integers (the table prints numbers as 64.000)
        assert group["hparams"]["verdict"] == result["verdict"]
        assert group["hparams"]["data.batch_size"] == "64" and group["hparams"]["seed"] == "0"
        metrics = {m["name"]["tag"]: m["value"] for m in group["metricValues"]}
        assert {"final/val_mse", "final/test_mse", "final/test_bce"} <= set(metrics)
        # the columns that compare runs: the final EV and ||W1||/||W1(0)||, as in metrics.json
        assert metrics["final/ev"] == pytest.approx(result["diagnostics"]["blob/ev"], rel=1e-6)
        assert metrics["final/W1_norm_ratio"] == pytest.approx(
            result["diagnostics"]["collapse/norm_ratio/W1"], rel=1e-6)
        assert metrics["final/test_mse"] == pytest.approx(result["test"]["mse"], rel=1e-6)
        assert group["sessions"][0]["status"] == "STATUS_SUCCESS"
    diverged = groups["diverged"]
    assert diverged["hparams"]["optimizer"] == "sgd" and diverged["hparams"]["optimizer.lr"] == 10
    assert diverged["hparams"]["verdict"] == "diverged"
    assert diverged["sessions"][0]["status"] == "STATUS_FAILURE"
    metrics = {m["name"]["tag"]: m["value"] for m in diverged["metricValues"]}
    assert "final/val_mse" in metrics and not any("test" in t for t in metrics)


def test_hparams_tab_has_no_empty_column_and_shows_the_verdict(server):
    """Every metric column the tab declares holds a value in some run (no final/val_step,
    final/val_epoch); `verdict` is among the columns shown from the start (differs)."""
    experiment = server.json("/data/plugin/hparams/experiment", {"experimentName": ""})
    columns = [m["name"]["tag"] for m in experiment["metricInfos"]]
    assert {"final/ev", "final/W1_norm_ratio", "final/test_mse", "final/test_bce"} <= set(columns)
    filled = {m["name"]["tag"] for g in server.session_groups() for m in g["metricValues"]}
    assert set(columns) <= filled, set(columns) - filled
    assert not any(c.endswith(("_step", "_epoch")) for c in columns)
    infos = {h["name"]: h for h in experiment["hparamInfos"]}
    assert infos["verdict"]["type"] == "DATA_TYPE_STRING" and infos["verdict"].get("differs")
    assert infos["data.batch_size"]["type"] == "DATA_TYPE_STRING"


@pytest.mark.parametrize("status", sorted(SESSION_STATUS))
def test_every_run_status_has_a_tensorboard_session_status(status):
    from tensorboard.plugins.hparams import plugin_data_pb2

    *_, end = session_summaries({"flag": True}, ["final/val_mse"], set(), status)
    data = plugin_data_pb2.HParamsPluginData.FromString(end.value[0].metadata.plugin_data.content)
    assert api_pb2.Status.Name(data.session_end_info.status) == SESSION_STATUS[status]
