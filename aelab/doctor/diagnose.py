"""Symptom, then causes: a run's diagnosis, written into its metrics.json and printed.

    {"symptom": "collapsed", "reason": "...", "provisional": null,
     "causes": [{"cause": "penalty", "confidence": 0.8, "evidence": {...},
                 "explanation": "...", "fix": ["l2_penalty=0"]}, ...]}

The symptom is the verdict rule's (aelab.diagnostics.verdict) on the run's diagnostics
history; the causes are every rule of aelab.doctor.causes that fires, most confident first,
empty for a healthy run. `attach_diagnosis` is called for every run that ends (single,
stacked, VAE, diverged) by aelab.training.record.write_result.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import asdict
from typing import Any

from aelab.diagnostics import verdict as verdicts
from aelab.doctor.causes import RULES
from aelab.doctor.view import Run

log = logging.getLogger("aelab")
DIAGNOSED = ("completed", "diverged")  # statuses whose runs are diagnosed


def thresholds_of(config: Mapping[str, Any] | None) -> verdicts.Thresholds:
    """The run's own verdict thresholds (callbacks.diagnostics.thresholds), else defaults."""
    node: Any = config or {}
    for key in ("callbacks", "diagnostics", "thresholds"):
        node = node.get(key) if isinstance(node, Mapping) else None
    try:
        return verdicts.Thresholds.from_mapping(node if isinstance(node, Mapping) else None)
    except Exception:
        return verdicts.Thresholds()


def symptom_of(result: Mapping[str, Any],
               thresholds: verdicts.Thresholds) -> tuple[str, str, str | None]:
    """(symptom, reason, provisional) of a run's record."""
    history = result.get("diagnostics_history") or {}
    if result.get("status") == "diverged":
        return "diverged", str(result.get("verdict_reason") or result.get("error") or ""), None
    if not history:
        return "unknown", "no diagnostics recorded (callbacks.diagnostics is off)", None
    name, reason = verdicts.verdict(history, thresholds)
    early = None if name == "unknown" else verdicts.provisional(history, thresholds)
    return name, reason, early


def diagnose(result: Mapping[str, Any], config: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The diagnosis of a run's metrics.json dict; `config`: its config as a plain dict (the
    fixes are its overrides), or None (a user's own Lightning project: fixes in words)."""
    symptom, reason, early = symptom_of(result, thresholds_of(config))
    run = Run.of(result, config, symptom)
    if run.preflight is None and config and symptom != "healthy":
        from aelab.doctor.preflight import preflight_from_config

        run.preflight = preflight_from_config(config)
    causes = [found for rule in RULES if (found := rule(run)) is not None]
    causes.sort(key=lambda c: -c.confidence)
    return {"symptom": symptom, "reason": reason, "provisional": early,
            "causes": [asdict(c) for c in causes]}


def describe(diagnosis: Mapping[str, Any]) -> str:
    """The diagnosis as printed: the symptom, then each cause with its evidence and fix."""
    head = f"doctor: {diagnosis['symptom']} ({diagnosis.get('reason', '')})"
    if diagnosis.get("provisional"):
        head += f" [provisional: {diagnosis['provisional']}]"
    causes = diagnosis.get("causes") or []
    if not causes:
        return head + (": no cause found" if diagnosis["symptom"] != "healthy" else "")
    lines = [head]
    for n, c in enumerate(causes, start=1):
        evidence = ", ".join(f"{k}={v}" for k, v in c["evidence"].items())
        lines.append(f"  {n}. {c['cause']} ({c['confidence']:.2f}): {c['explanation']}")
        lines.append(f"     evidence: {evidence}")
        if c["fix"]:
            lines.append(f"     fix: {' | '.join(c['fix'])}")
    return "\n".join(lines)


def plain_config(cfg: Any) -> dict[str, Any]:
    """A DictConfig (or mapping) as a plain dict, interpolations resolved where they can be."""
    from omegaconf import DictConfig, OmegaConf

    if not isinstance(cfg, DictConfig):
        return dict(cfg or {})
    try:
        return OmegaConf.to_container(cfg, resolve=True)  # type: ignore[return-value]
    except Exception:  # ${hydra:...} outside a Hydra job
        return OmegaConf.to_container(cfg, resolve=False)  # type: ignore[return-value]


def attach_diagnosis(result: dict[str, Any], cfg: Any) -> dict[str, Any]:
    """Add `diagnosis` to a finished run's result (in place) and log it; a run that did not
    finish (refused, failed, interrupted) is left as it is."""
    if result.get("status") not in DIAGNOSED:
        return result
    try:
        result["diagnosis"] = diagnosis = diagnose(result, plain_config(cfg))
    except Exception as exc:  # the record must be written whatever the doctor thinks
        log.warning("doctor: no diagnosis (%s: %s)", type(exc).__name__, exc)
        return result
    text = describe(diagnosis)
    (log.warning if diagnosis["causes"] else log.info)("%s", text)
    return result
