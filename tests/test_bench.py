"""The benchmark module runs, prints ratios with both absolute times (no timing asserted), and
checks that both sides of a ratio did the same work."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from conftest import DATA_DIR

RATIO = r"(\d+\.\d+) s / .* (\d+\.\d+) s = +(\d+\.\d+)x"


def bench(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "benchmarks.bench", "--data-root", str(DATA_DIR), *args],
        capture_output=True, text=True, timeout=600,
    )


def ratios(out: str) -> dict[str, tuple[float, float, float]]:
    found = {}
    for line in out.splitlines():
        match = re.search(RATIO, line)
        if match:
            ours, base, ratio = map(float, match.groups())
            found[line[:38].strip()] = (ours, base, ratio)
    return found


def test_bench_refuses_a_single_epoch():
    proc = bench("--epochs", "1")
    assert proc.returncode == 2 and "--epochs must be >= 2" in proc.stderr


@pytest.mark.slow
def test_bench_epoch_and_startup_print_consistent_ratios(mnist_root):
    proc = bench("--only", "epoch", "--only", "startup", "--batch-sizes", "512",
                 "--epochs", "2", "--repeat", "1")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert re.match(r"aelab bench: \d+ CPUs, torch \S+ \(\d+ threads\), device \w+", proc.stdout)
    found = ratios(proc.stdout)
    assert set(found) == {"epoch, batch 512", "start-up: --cfg job vs import torch"}
    for ours, base, ratio in found.values():
        assert ours > 0 and base > 0 and ratio == pytest.approx(ours / base, abs=0.01)


def test_bench_stacked_prints_its_ratio_on_tiny_synthetic_sweeps():
    proc = bench("--stacked", "--stacked-data", "synthetic", "--stacked-ks", "2",
                 "--epochs", "2", "--repeat", "1", "--stacked-parts", "sweeps", "hand")
    assert proc.returncode == 0, proc.stderr[-2000:]
    found = ratios(proc.stdout)
    assert set(found) == {"K=2 stacked / in a row, s/model-epoch",
                          "single run / hand loop, epoch", "K=2 group / hand loop, s/model-epoch"}
    for ours, base, ratio in found.values():  # times printed to 1 ms: tiny ones round
        assert ours > 0 and base > 0 and ratio == pytest.approx(ours / base, rel=0.05)
    # both sides did the same work: 2 runs x 2 epochs each, with the same results (a stacked
    # run equals its single run on the CPU), so the ratio compares like with like
    same = re.search(r"same work: 2 runs x 2 epochs each side, final val/mse max relative "
                     r"difference (\S+)", proc.stdout)
    assert same and float(same.group(1)) < 1e-5, proc.stdout
