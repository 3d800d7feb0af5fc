"""The doctor's labelled benchmark: runs with a known cause, diagnosed and treated.

    python -m benchmarks.doctor                   # train, diagnose, treat; print the table
    python -m benchmarks.doctor --no-treat        # train and diagnose only
    python -m benchmarks.doctor --only h4_mlp,penalty_seed
    python -m benchmarks.doctor --cases my_cases.yaml --out outputs/my_bench

Each case of benchmarks/doctor_cases.yaml is a command's overrides (plus the file's `common`
ones), the symptom it must show and its cause (`healthy`: no cause may be reported; `also`:
causes that must be reported too). The cases train as one sweep (aelab.doctor.treat
.train_jobs: MLP runs stacked where they can share a model, the rest alone) in
OUT/<case>; a case whose folder already holds a metrics.json is not trained again, so a rerun
after a rule change only re-diagnoses. Then every folder is diagnosed afresh
(`python -m aelab.doctor`'s way), every failure with a fix is treated (`--treat`'s way:
each fix, then one follow-up for a first fix that left another cause), and the tables are
printed and written to OUT/results.md (and results.json): the confusion of expected against
top-1 cause, symptom accuracy, top-1 cause accuracy, false alarms on healthy cases, and the
share of failures that a fix heals.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections import Counter
from pathlib import Path

import yaml

from aelab.doctor.__main__ import diagnose_folder
from aelab.doctor.treat import compose_job, override_key, train_jobs, treat

CASES = Path(__file__).with_name("doctor_cases.yaml")


def load_cases(path: Path, only: set[str] | None = None) -> tuple[list[str], list[dict]]:
    spec = yaml.safe_load(path.read_text())
    cases = [c for c in spec["cases"] if not only or c["name"] in only]
    return list(spec.get("common") or []), cases


def overrides_of(common: list[str], case: dict) -> list[str]:
    """The case's command: `common`, then its own overrides (a key of both: the case's)."""
    own = {override_key(o) for o in case["overrides"]}
    return [*(o for o in common if override_key(o) not in own), *case["overrides"]]


def train_cases(common: list[str], cases: list[dict], out: Path, stack: int) -> None:
    jobs = [compose_job(overrides_of(common, c), out / c["name"]) for c in cases
            if not (out / c["name"] / "metrics.json").is_file()]
    if jobs:
        out.mkdir(parents=True, exist_ok=True)
        train_jobs(jobs, out, stack)


def score(cases: list[dict], out: Path) -> tuple[list[dict], float]:
    """Each case's row (expected and found symptom and causes); the mean diagnosis time."""
    rows, seconds = [], []
    for case in cases:
        folder = out / case["name"]
        if not (folder / "metrics.json").is_file():
            rows.append({"case": case["name"], "expected": case["cause"], "top1": "not run",
                         "symptom": "not run", "expected_symptom": case["symptom"],
                         "causes": [], "also": case.get("also", [])})
            continue
        started = time.perf_counter()
        diagnosis = diagnose_folder(folder)
        seconds.append(time.perf_counter() - started)
        causes = [c["cause"] for c in diagnosis["causes"]]
        rows.append({"case": case["name"], "expected": case["cause"],
                     "top1": causes[0] if causes else "none", "causes": causes,
                     "also": case.get("also", []), "symptom": diagnosis["symptom"],
                     "expected_symptom": case["symptom"],
                     "provisional": diagnosis.get("provisional")})
    return rows, (sum(seconds) / len(seconds) if seconds else float("nan"))


def heal_rows(rows: list[dict], out: Path, stack: int) -> dict[str, dict]:
    """Treat every failure case that has causes; case -> {top: healed by its first fix alone,
    any: healed by any treatment (follow-up included), fixes: the rows}."""
    failed = [out / r["case"] for r in rows if r["expected"] != "healthy" and r["causes"]]
    found = treat(failed, stack)
    healed: dict[str, dict] = {}
    for row in found:
        name = Path(row["run"]).name
        entry = healed.setdefault(name, {"top": None, "any": False, "fixes": []})
        if entry["top"] is None:
            entry["top"] = row["healed"]
        entry["any"] = entry["any"] or row["healed"]
        entry["fixes"].append(f"{row['fix']}: {row['symptom_after']}")
    return healed


def tables(rows: list[dict], healed: dict[str, dict], seconds: float) -> tuple[str, dict]:
    failures = [r for r in rows if r["expected"] != "healthy"]
    healthy = [r for r in rows if r["expected"] == "healthy"]
    symptom_ok = sum(r["symptom"] == r["expected_symptom"] for r in rows)
    top1_ok = sum(r["top1"] == r["expected"] for r in failures)
    also_ok = sum(all(a in r["causes"] for a in r["also"]) for r in failures if r["also"])
    also_n = sum(bool(r["also"]) for r in failures)
    alarms = [r for r in healthy if r["causes"]]
    offered = [r for r in failures if r["case"] in healed]
    figures = {
        "cases": len(rows), "failures": len(failures), "healthy": len(healthy),
        "symptom_accuracy": symptom_ok / len(rows) if rows else 0.0,
        "top1_cause_accuracy": top1_ok / len(failures) if failures else 0.0,
        "also_reported": f"{also_ok}/{also_n}",
        "false_alarms": len(alarms),
        "healed_by_first_fix": sum(bool(healed[r["case"]]["top"]) for r in offered),
        "healed_by_any_fix": sum(healed[r["case"]]["any"] for r in offered),
        "treated": len(offered), "diagnose_seconds_mean": seconds,
    }
    causes = sorted(({r["expected"] for r in rows} | {r["top1"] for r in rows}) - {"healthy"})
    confusion = Counter((r["expected"], r["top1"]) for r in rows)
    lines = ["| expected \\ top-1 | " + " | ".join(causes) + " |",
             "| --- |" + " --- |" * len(causes)]
    for e in sorted({r["expected"] for r in rows}):
        lines.append(f"| {e} | " + " | ".join(str(confusion[(e, c)] or "") for c in causes) + " |")
    lines += ["", "| case | expected | top-1 (others) | symptom (expected) | treatment |",
              "| --- | --- | --- | --- | --- |"]
    for r in rows:
        mark = "" if r["top1"] == r["expected"] or (r["expected"] == "healthy"
                                                     and r["top1"] == "none") else " **x**"
        heal = healed.get(r["case"])
        treated = "; ".join(heal["fixes"]) if heal else "-"
        others = f" ({', '.join(r['causes'][1:])})" if len(r["causes"]) > 1 else ""
        lines.append(f"| {r['case']} | {r['expected']} | {r['top1']}{others}{mark} | "
                     f"{r['symptom']} ({r['expected_symptom']}) | {treated} |")
    f = figures
    head = [
        f"symptom accuracy {f['symptom_accuracy']:.0%} ({f['cases']} cases); top-1 cause "
        f"accuracy {f['top1_cause_accuracy']:.0%} ({f['failures']} failures); second causes "
        f"reported {f['also_reported']}; false alarms {f['false_alarms']} of {f['healthy']} "
        f"healthy; healed by the first fix {f['healed_by_first_fix']}/{f['treated']}, by a "
        f"fix (follow-up included) {f['healed_by_any_fix']}/{f['treated']}; diagnosing a "
        f"folder {f['diagnose_seconds_mean'] * 1000:.0f} ms on average", ""]
    return "\n".join(head + lines), figures


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.doctor")
    parser.add_argument("--cases", type=Path, default=CASES)
    parser.add_argument("--out", type=Path, default=Path("outputs/doctor_bench"))
    parser.add_argument("--only", default="", help="comma-separated case names")
    parser.add_argument("--no-treat", action="store_true")
    parser.add_argument("--stack", type=int, default=8)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s][%(name)s] %(message)s")
    common, cases = load_cases(args.cases, set(filter(None, args.only.split(","))))
    started = time.perf_counter()
    train_cases(common, cases, args.out, args.stack)
    rows, seconds = score(cases, args.out)
    healed = {} if args.no_treat else heal_rows(rows, args.out, args.stack)
    text, figures = tables(rows, healed, seconds)
    figures["wall_seconds"] = round(time.perf_counter() - started, 1)
    (args.out / "results.md").write_text(text + "\n")
    (args.out / "results.json").write_text(json.dumps({"figures": figures, "rows": rows,
                                                       "healed": healed}, indent=2))
    print(text)
    print(f"\nwall time {figures['wall_seconds']:.0f} s -> {args.out}/results.md")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
