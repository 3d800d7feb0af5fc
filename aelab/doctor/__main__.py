"""`python -m aelab.doctor RUN_DIR [RUN_DIR ...] [--treat]`: why did these runs fail?

Each RUN_DIR is a run folder (it holds metrics.json) or a sweep folder (every run folder
under it, treat/ reruns left out). Each run's diagnosis (aelab.doctor.diagnose) is
recomputed from its record, written into its metrics.json and printed; a sweep also gets a
one-line-per-run table. `--treat` reruns each failed run once with each suggested fix
(same seed and length, stacked where the reruns can share a model) in RUN_DIR/treat/<fix>
and prints the table: fix, symptom after, test MSE before/after, healed or not.
Exit codes: 0, or 2 when a folder holds no run.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from aelab.doctor.diagnose import describe, diagnose
from aelab.doctor.treat import METRICS, TREAT, read_run, table, treat


def run_folders(path: Path) -> list[Path]:
    """The run folders at or under `path` (treat/ reruns left out), in name order."""
    if (path / METRICS).is_file():
        return [path]
    return sorted(p.parent for p in path.rglob(METRICS)
                  if TREAT not in p.relative_to(path).parts[:-1])


def diagnose_folder(folder: Path, write: bool = True) -> dict:
    """The run's diagnosis from its metrics.json and .hydra/config.yaml, written back."""
    from aelab.training.record import write_json

    result, config = read_run(folder)
    result["diagnosis"] = diagnosis = diagnose(result, config)
    if write:
        write_json(folder / METRICS, result)
    return diagnosis


def summary_line(folder: Path, diagnosis: dict) -> str:
    causes = diagnosis["causes"]
    top = f"{causes[0]['cause']} -> {' | '.join(causes[0]['fix'])}" if causes else "-"
    more = f" (+{', '.join(c['cause'] for c in causes[1:])})" if len(causes) > 1 else ""
    return f"| {folder.name} | {diagnosis['symptom']} | {top}{more} |"


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m aelab.doctor", description=__doc__.split(
        "\n")[0])
    parser.add_argument("folders", nargs="+", type=Path, help="run or sweep folders")
    parser.add_argument("--treat", action="store_true", help="rerun each failed run with each fix")
    parser.add_argument("--stack", type=int, default=8, help="most reruns per stacked model")
    parser.add_argument("--no-write", action="store_true", help="leave metrics.json as it is")
    args = parser.parse_args(argv)
    folders = []
    for path in args.folders:
        found = run_folders(path)
        if not found:
            print(f"aelab: error: {path} holds no run (no {METRICS} at or under it)",
                  file=sys.stderr)
            return 2
        folders += found
    diagnoses = {f: diagnose_folder(f, not args.no_write) for f in folders}
    if len(folders) == 1:
        print(f"{folders[0]}\n{describe(diagnoses[folders[0]])}")
    else:
        print("| run | symptom | first cause -> fix (other causes) |\n| --- | --- | --- |")
        print("\n".join(summary_line(f, d) for f, d in diagnoses.items()))
    if args.treat:
        logging.basicConfig(level=logging.INFO, format="[%(asctime)s][%(name)s] %(message)s")
        failed = [f for f, d in diagnoses.items() if d["causes"]]
        rows = treat(failed, args.stack)
        print(table(rows) if rows else "nothing to treat: no run has a cause with an override")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
