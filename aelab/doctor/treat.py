"""Treat: prove a fix by rerunning the run with it, same seed and length.

Each suggested fix of a diagnosed run becomes one rerun: the run's own overrides with the
fix applied (an override of the same key, or of the same group and its keys, gives way),
in RUN_DIR/treat/<fix>. The reruns of one call are planned as one sweep
(aelab.stacked.sweep): MLP runs that can share a stacked model train as one, the others
alone. A fix heals when the rerun's symptom is `healthy`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from aelab.doctor.diagnose import describe, diagnose, plain_config

METRICS = "metrics.json"
TREAT = "treat"
MAX_FIXES = 3  # reruns per diagnosed run at most (its first fixes, in rank order)


def override_key(override: str) -> str:
    return override.partition("=")[0].lstrip("+~")


def is_override(fix: str) -> bool:
    """An aelab override (`key=value`), not a fix in words (a user's own model)."""
    return bool(re.fullmatch(r"[+~]?[A-Za-z_][\w.]*=\S*", fix))


def with_fix(overrides: Sequence[str], fix: str) -> list[str]:
    """`overrides` with `fix` applied: an override of the fix's key gives way, and for a group
    choice (`optimizer=adam`) so do the group's own keys (`optimizer.lr=...`)."""
    key = override_key(fix)
    kept = [o for o in overrides
            if override_key(o) != key and not override_key(o).startswith(key + ".")
            and not override_key(o).startswith(("hydra.", "paths."))
            and override_key(o) != "resume"]
    return [*kept, fix]


def slug(fix: str) -> str:
    return re.sub(r"[^\w.=+-]+", "_", fix.replace(" ", "+"))


def fixes_of(diagnosis: dict[str, Any], limit: int = MAX_FIXES) -> list[str]:
    """The distinct override fixes of a diagnosis, in the order of its causes."""
    found: list[str] = []
    for cause in diagnosis.get("causes") or []:
        found += [f for f in cause.get("fix") or [] if is_override(f) and f not in found]
    return found[:limit]


def compose_job(overrides: Sequence[str], out_dir: Path) -> tuple[Any, dict[str, str], list[str]]:
    """(config, choices, overrides) of one run of `python -m aelab OVERRIDES` in `out_dir`."""
    from omegaconf import open_dict

    from aelab.stacked.sweep import _compose

    cfg = _compose([*overrides, f"paths.output_dir='{out_dir}'"])
    choices = dict(cfg.hydra.runtime.choices)
    with open_dict(cfg):
        del cfg["hydra"]
    return cfg, choices, list(overrides)


def train_jobs(jobs: list[tuple[Any, dict[str, str], list[str]]], folder: Path,
               stack: int = 8) -> None:
    """Train `jobs` as one sweep: stacked where they can share a model, alone otherwise."""
    from aelab.stacked.plan import plan_groups
    from aelab.stacked.sweep import Sweep, _run_single, train_sweep

    if not jobs:
        return
    from omegaconf import OmegaConf

    for cfg, _, overrides in jobs:  # the record a run launched by Hydra would have
        record = Path(cfg.paths.output_dir) / ".hydra"
        if not (record / "config.yaml").is_file():
            record.mkdir(parents=True, exist_ok=True)
            (record / "config.yaml").write_text(OmegaConf.to_yaml(cfg), encoding="utf-8")
            (record / "overrides.yaml").write_text(OmegaConf.to_yaml(list(overrides)))
    if plan_groups([cfg for cfg, _, _ in jobs], stack).groups:
        train_sweep(Sweep(folder, jobs, set()), stack)
    else:  # nothing stacks: train_sweep refuses a sweep without a group
        for job in jobs:
            _run_single(*job)


def read_run(folder: Path) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """(metrics.json, config as a plain dict or None) of a run folder."""
    result = json.loads((folder / METRICS).read_text())
    config_file = folder / ".hydra" / "config.yaml"
    config = None
    if config_file.is_file():
        from omegaconf import OmegaConf

        config = plain_config(OmegaConf.load(config_file))
    return result, config


def plan_treatment(folder: Path, diagnosis: dict[str, Any],
                   overrides: Sequence[str]) -> list[tuple[str, Path, list[str]]]:
    """(fix, rerun folder, its overrides) for each fix of a diagnosed run."""
    return [(fix, folder / TREAT / slug(fix), with_fix(overrides, fix))
            for fix in fixes_of(diagnosis)]


def outcome(folder: Path, fix: str, before: dict[str, Any], rerun: Path) -> dict[str, Any]:
    """One row of the treatment table: the fix, the symptom after, test MSE before/after."""
    row = {"run": str(folder), "fix": fix, "symptom_before": before["symptom"],
           "test_mse_before": (before.get("test") or {}).get("mse")}
    if not (rerun / METRICS).is_file():
        return row | {"symptom_after": "not run", "test_mse_after": None, "healed": False,
                      "causes_after": []}
    result, config = read_run(rerun)
    after = result.get("diagnosis") or diagnose(result, config)
    symptom = after["symptom"] if result.get("status") in ("completed", "diverged") else \
        result.get("status")
    return row | {"symptom_after": symptom, "test_mse_after": (result.get("test") or {}).get("mse"),
                  "healed": symptom == "healthy",
                  "causes_after": [c["cause"] for c in after.get("causes") or []],
                  "next_fixes": fixes_of(after)}


def _train_missing(plans: Iterable[tuple[str, Path, list[str]]], stack: int) -> None:
    jobs = [compose_job(overrides, rerun) for _, rerun, overrides in plans
            if not (rerun / METRICS).is_file()]
    if jobs:
        train_jobs(jobs, Path(jobs[0][0].paths.output_dir).parent, stack)


def treat(folders: Iterable[Path], stack: int = 8,
          follow_up: bool = True) -> list[dict[str, Any]]:
    """Rerun every diagnosed run in `folders` with each of its fixes; the table's rows. With
    `follow_up`, a first fix whose rerun removed nothing but is still not healthy is rerun once
    more with the rerun's own first fix on top ("fix1 fix2": two causes, one after the other).
    Each run's metrics.json gets its `treatment` (its rows)."""
    from aelab.training.record import write_json

    runs = []
    for folder in folders:
        result, _ = read_run(folder)
        if result.get("diagnosis"):
            runs.append((folder, result, plan_treatment(
                folder, result["diagnosis"], result.get("overrides") or [])))
    _train_missing([p for _, _, plan in runs for p in plan], stack)
    if follow_up:
        extra = []
        for folder, _, plan in runs:
            if not plan:
                continue
            fix, rerun, overrides = plan[0]
            row = outcome(folder, fix, {"symptom": "", "test": {}}, rerun)
            nxt = [f for f in row.get("next_fixes", []) if override_key(f) not in
                   {override_key(p) for p in fix.split()}]
            if not row["healed"] and nxt:
                label = f"{fix} {nxt[0]}"
                plan.append((label, folder / TREAT / slug(label), with_fix(overrides, nxt[0])))
                extra.append(plan[-1])
        _train_missing(extra, stack)
    rows = []
    for folder, result, plan in runs:
        before = {"symptom": result["diagnosis"]["symptom"], "test": result.get("test")}
        found = [outcome(folder, fix, before, rerun) for fix, rerun, _ in plan]
        for row in found:
            row.pop("next_fixes", None)
        result["treatment"] = found
        write_json(folder / METRICS, result)
        rows += found
    return rows


def table(rows: Sequence[dict[str, Any]]) -> str:
    """The treatment table, as printed."""
    def num(v: Any) -> str:
        return "-" if v is None else f"{v:.4f}"

    lines = ["| run | fix | symptom before -> after | test MSE before -> after | healed |",
             "| --- | --- | --- | --- | --- |"]
    for r in rows:
        lines.append(f"| {Path(r['run']).name} | `{r['fix']}` | {r['symptom_before']} -> "
                     f"{r['symptom_after']} | {num(r['test_mse_before'])} -> "
                     f"{num(r['test_mse_after'])} | {'yes' if r['healed'] else 'no'} |")
    return "\n".join(lines)


__all__ = ["describe", "fixes_of", "plan_treatment", "table", "treat", "with_fix"]
