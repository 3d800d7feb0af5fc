"""The outcome of a multirun: count its runs' statuses, and fail the sweep when a run failed.

Each job of a multirun records its status in its own metrics.json and returns normally,
so every launcher (basic, joblib) runs every job however they are batched. After the
sweep, `SweepOutcome` (a Hydra callback) reads those files: it logs one line of counts,
names the failed runs, and exits 1 if any run failed (status "failed", or a job folder
with no metrics.json at all) or if every run was refused. Diverged runs and refused cells
(a combination the lab refuses by design, such as bce on standardised data) do not fail
a sweep: they are results.

A run whose folder is not its to write (in use, holding a run, holding a run with other
settings under resume=true, unwritable: aelab.errors.RunFolderError) records nothing there:
the job notes it in the sweep folder (`note_refused`, one small file in `.aelab-refused/`,
removed at the end, so that every launcher's processes can say it), the sweep lists those
runs as left as they were and exits 2 (1 when a run also failed). No torch is imported here.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
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


REFUSALS = ".aelab-refused"  # in the sweep folder while it runs: one file per refused run


def note_refused(sweep_dir: Path, folder: Path, message: str) -> None:
    """Note for the sweep's outcome that run `folder` was refused and left as it was."""
    notes = Path(sweep_dir) / REFUSALS
    name = hashlib.sha1(str(Path(folder).resolve()).encode()).hexdigest()[:16]
    try:
        notes.mkdir(parents=True, exist_ok=True)
        (notes / f"{name}.json").write_text(json.dumps({"folder": str(folder),
                                                         "error": message}))
    except OSError:  # the sweep folder cannot be written: the job's own message stands alone
        pass


def take_refusals(sweep_dir: Path) -> dict[Path, str]:
    """Run folder -> refusal of the runs noted by `note_refused`; the notes are removed."""
    notes = Path(sweep_dir) / REFUSALS
    refused = {}
    for path in sorted(notes.glob("*.json")):
        try:
            note = json.loads(path.read_text())
            refused[Path(note["folder"]).resolve()] = str(note["error"])
        except (OSError, ValueError, KeyError, TypeError):
            continue
    shutil.rmtree(notes, ignore_errors=True)
    return refused


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


def report_outcome(sweep_dir: Path) -> tuple[str, str, int]:
    """The sweep's line of counts, what to print to stderr (the failed runs, the refused
    ones) and its exit code (0; 1: a run failed; 2: runs refused and left as they were)."""
    sweep_dir = Path(sweep_dir)
    refused = take_refusals(sweep_dir)
    statuses = {f: s for f, s in sweep_statuses(sweep_dir).items() if f.resolve() not in refused}
    line, failures = summarize_outcome(statuses)
    if refused:
        kept = f"{len(refused)} refused (left as they were)"
        line = f"{line}, {kept}" if statuses else kept
    text = []
    if failures:
        shown = "\n  ".join(failures[:20])
        text.append(f"aelab: {len(failures)} run(s) of the sweep failed (see their "
                    f"metrics.json):\n  {shown}")
    if refused:
        shown = "\n  ".join(f"{_name(folder, sweep_dir)}: {error.splitlines()[0]}"
                            for folder, error in sorted(refused.items())[:20])
        text.append(f"aelab: error: {len(refused)} run(s) of the sweep were refused, their "
                    f"folders left as they were (the full reasons are above):\n  {shown}")
    return line, "\n".join(text), 1 if failures else 2 if refused else 0


def _name(folder: Path, sweep_dir: Path) -> str:
    try:
        return str(folder.relative_to(sweep_dir.resolve()))
    except ValueError:
        return str(folder)


class SweepOutcome(Callback):
    """Hydra callback: after a multirun, log the runs' statuses; exit 1 if any run failed,
    2 if runs were refused (their folders left as they were)."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        take_refusals(Path(config.hydra.sweep.dir))  # notes an interrupted sweep left

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        line, text, code = report_outcome(sweep_dir)
        log.info("sweep %s: %s", sweep_dir, line)
        if text:
            print(text, file=sys.stderr)
        if code:
            sys.exit(code)
