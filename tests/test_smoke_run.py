"""In-process runs through the real composed config and a real Lightning Trainer."""

import json

from aelab.training.run import run

from conftest import TINY


def test_tiny_run_writes_metrics_and_checkpoint(make_config, tmp_path):
    cfg = make_config(*TINY)
    result = run(cfg)
    folder = tmp_path / "run"
    saved = json.loads((folder / "metrics.json").read_text())
    assert saved["status"] == "completed" and saved["epochs"] == 1
    assert saved["test"]["mse"] == result["test"]["mse"]
    assert 0 < saved["test"]["mse"] < 0.2
    assert (folder / "last.ckpt").is_file()
