"""A finished run as the cause rules read it: symptom, histories, config, preflight.

`Run.of(result, config)` takes a run's metrics.json dict and its config (a plain dict, e.g.
.hydra/config.yaml, or None for a user's own Lightning project) and answers the questions
the rules ask, so that each rule stays a few lines over plain numbers.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

FAILED = frozenset({"blob", "collapsed", "frozen", "diverged", "posterior_collapse"})


def fmt(value: Any) -> Any:
    """A float to 4 significant digits (JSON- and eye-friendly); anything else as it is."""
    if isinstance(value, float) and math.isfinite(value) and value != 0:
        return float(f"{value:.4g}")
    return value


def _natural(key: str) -> tuple:
    return tuple(int(p) if p.isdigit() else p for p in re.split(r"(\d+)", key))


@dataclass
class Run:
    symptom: str
    status: str = "completed"
    history: dict[str, list[float]] = field(default_factory=dict)  # diagnostics, per measurement
    train: dict[str, list[float]] = field(default_factory=dict)  # train/val metrics, per epoch
    config: dict[str, Any] = field(default_factory=dict)
    choices: dict[str, Any] = field(default_factory=dict)
    preflight: dict[str, Any] | None = None
    layers: dict[str, str] = field(default_factory=dict)

    @classmethod
    def of(cls, result: Mapping[str, Any], config: Mapping[str, Any] | None, symptom: str) -> Run:
        return cls(symptom, str(result.get("status", "completed")),
                   dict(result.get("diagnostics_history") or {}), dict(result.get("history") or {}),
                   dict(config or {}), dict(result.get("choices") or {}), result.get("preflight"),
                   dict(result.get("diagnostics_layers") or {}))

    # ------------------------------------------------------------ the histories

    def series(self, key: str) -> list[float]:
        return [float(v) for v in self.history.get(key) or []]

    def last(self, key: str) -> float | None:
        values = self.series(key)
        return values[-1] if values else None

    def all_series(self, prefix: str) -> dict[str, list[float]]:
        """Every history whose key starts with `prefix`, in natural order (W2 before W10)."""
        return {k: self.series(k) for k in sorted(self.history, key=_natural)
                if k.startswith(prefix)}

    def finals(self, prefix: str) -> dict[str, float]:
        return {k: v[-1] for k, v in self.all_series(prefix).items() if v and math.isfinite(v[-1])}

    def train_loss(self) -> list[float]:
        values = self.train.get("train/loss") or self.history.get("loss") or []
        return [float(v) for v in values]

    def layer(self, key: str) -> str:
        """A hidden layer's name for the reader: `h2 (encoder.stages.1.activation, Sigmoid)`."""
        name = self.layers.get(key)
        return f"{key} ({name})" if name else key

    # ------------------------------------------------------------ the config

    def value(self, path: str, default: Any = None) -> Any:
        node: Any = self.config
        for part in path.split("."):
            if not isinstance(node, Mapping) or part not in node:
                return default
            node = node[part]
        return node

    def number(self, path: str, default: float | None = None) -> float | None:
        value = self.value(path)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        try:
            return float(value) if isinstance(value, str) else default
        except ValueError:
            return default

    def text(self, path: str) -> str | None:
        value = self.value(path)
        return None if value is None else str(value)

    def choice(self, group: str) -> str | None:
        """The group option the run chose (`loss` -> "bce"), when known."""
        chosen = self.choices.get(group)
        return str(chosen) if chosen else None


def preflight_fix(report: Mapping[str, Any] | None, loss: str | None,
                  normalization: str | None) -> list[str]:
    """Overrides that make the check before training pass: [0, 1] targets for a loss whose
    domain they left (or a loss for any targets), else a proper loss."""
    numbers = (report or {}).get("numbers", {})
    if "unbounded_pixel_share" in numbers or numbers.get("target_min", 0) < 0 \
            or numbers.get("target_max", 1) > 1:
        if normalization not in (None, "unit"):
            return ["normalization=unit", "loss=mse"]
        return ["loss=mse"]
    return [LOSS_FIX.get(loss or "", "loss=bce")]


# the fix for each named loss that fails the check before training
LOSS_FIX = {"bce_naive_positive": "loss=bce", "bce_double_sigmoid": "loss=bce",
            "softmax_pixels": "loss=bce", "bce_swapped_logits": "loss=bce",
            "bce_swapped_probs": "loss=bce", "bce_unclamped_probs": "loss=bce",
            "bce_clamped_probs": "loss=bce"}
