"""The outcome of a multirun: count its runs' statuses, and fail the sweep when a run failed.

Each job of a multirun records its status in its own metrics.json and returns normally,
so every launcher (basic, joblib) runs every job however they are batched. After the
sweep, `SweepOutcome` (a Hydra callback) reads those files: it logs one line of counts,
names the failed runs, and exits 1 if any run failed (status "failed", or a job folder
with no metrics.json at all) or if every run was refused. Diverged runs and refused cells
(a combination the lab refuses by design, such as bce on standardised data) do not fail
a sweep: they are results. No torch is imported here.
"""

from __future__ import annotations

import json
import logging
import sys
from collections import Counter
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

log = logging.getLogger("aelab")

FAILING = ("failed", "unfinished")
REFUSED = "refused"


def sweep_statuses(sweep_dir: Path) -> dict[Path, tuple[str, str]]:
    """Job folder -> (status, error) for every job folder (one holding .hydra) under sweep_dir."""
    out: dict[Path, tuple[str, str]] = {}
    for hydra_dir in sorted(sweep_dir.rglob(".hydra")):
        folder = hydra_dir.parent
        if folder == sweep_dir:
            continue
        try:
            metrics = json.loads((folder / "metrics.json").read_text())
            out[folder] = (str(metrics.get("status", "unknown")), str(metrics.get("error", "")))
        except (OSError, ValueError, AttributeError):
            out[folder] = ("unfinished", "no readable metrics.json (the job died or was refused)")
    return out


def summarize_outcome(statuses: dict[Path, tuple[str, str]]) -> tuple[str, list[str]]:
    """One line of counts, and one line per failed run (every run when all were refused)."""
    counts = Counter(status for status, _ in statuses.values())
    line = ", ".join(f"{n} {status}" for status, n in sorted(counts.items())) or "no runs"
    all_refused = bool(statuses) and set(counts) == {REFUSED}
    failures = [
        f"{folder.name}: {status}: {error.splitlines()[0] if error else ''}"
        for folder, (status, error) in statuses.items()
        if status in FAILING or all_refused
    ]
    return line, failures


class SweepOutcome(Callback):
    """Hydra callback: after a multirun, log the runs' statuses; exit 1 if any run failed."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        line, failures = summarize_outcome(sweep_statuses(sweep_dir))
        log.info("sweep %s: %s", sweep_dir, line)
        if failures:
            shown = "\n  ".join(failures[:20])
            print(
                f"aelab: {len(failures)} run(s) of the sweep failed (see their metrics.json):"
                f"\n  {shown}",
                file=sys.stderr,
            )
            sys.exit(1)
