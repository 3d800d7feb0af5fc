"""The run's verdict (a symptom: healthy, blob, collapsed, ...) from its diagnostics history."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields

from aelab.errors import ConfigError

VERDICTS = ("healthy", "blob", "collapsed", "frozen", "diverged", "posterior_collapse",
            "unknown")


@dataclass(frozen=True)
class Thresholds:
    """Limits for `verdict`; kept in conf/callbacks/default.yaml (diagnostics.thresholds)."""

    blob_ev: float = 0.1  # blob when the final EV is below this
    collapse_norm_ratio: float = 0.5  # collapsed (EV < blob_ev) when ||W1||/||W1(0)|| < this ...
    collapse_shrunk_fraction: float = 0.5  # ... or this fraction of first-layer units shrank
    frozen_change: float = 0.05  # frozen (EV < blob_ev) when every layer moved less than this ...
    frozen_saturation: float = 0.5  # ... and a hidden layer has more saturated or dead units,
    frozen_blocked: float = 0.9  # or, however far the weights moved, more than this
    posterior_kl: float = 1.0  # a VAE's posterior collapsed: KL below this (nats per image)
    provisional_ev_gain: float = 0.02  # provisional: EV still rising this much per epoch

    @classmethod
    def from_mapping(cls, values: Mapping[str, float] | None) -> Thresholds:
        names = {f.name for f in fields(cls)}
        unknown = set(values or {}) - names
        if unknown:
            raise ConfigError(
                f"callbacks.diagnostics.thresholds has unknown keys {sorted(unknown)}; "
                f"known: {', '.join(sorted(names))}."
            )
        return cls(**{k: float(v) for k, v in (values or {}).items()})


def _last(history: Mapping[str, Sequence[float]], key: str) -> float | None:
    values = history.get(key)
    return float(values[-1]) if values else None


def blocked_layers(history: Mapping[str, Sequence[float]]) -> dict[str, tuple[float, str]]:
    """Hidden layer -> (its final share of units that pass no signal, "saturated" or "dead"):
    `units/saturation/h*` (sigmoid, tanh) and `units/dead/h*` (ReLU-like), the larger."""
    found: dict[str, tuple[float, str]] = {}
    for kind, word in (("saturation", "saturated"), ("dead", "dead")):
        for key, values in history.items():
            if key.startswith(f"units/{kind}/h") and values and math.isfinite(values[-1]):
                layer = key.rsplit("/", 1)[1]
                if values[-1] > found.get(layer, (-1.0, ""))[0]:
                    found[layer] = (float(values[-1]), word)
    return found


def verdict(
    history: Mapping[str, Sequence[float]], thresholds: Thresholds = Thresholds()
) -> tuple[str, str]:
    """(verdict, reason) from a diagnostics history keyed by TensorBoard tag.

    Checked in order, the first that applies wins:
    `diverged`: any `loss` value, the final `blob/mse` or a final `collapse/max_abs/*` is not
    finite (NaN or inf weights or outputs);
    `unknown`: no `blob/ev` was measured (nothing to judge by);
    `posterior_collapse` (a VAE): the final `latent/kl_total` < posterior_kl nats per image;
    `healthy`: the final `blob/ev` >= blob_ev, whatever the weights did (a shrunk W1 is
    named in the reason); below it, the run failed, and is
    `collapsed`: `collapse/norm_ratio/W1` < collapse_norm_ratio, or
    `collapse/shrunk_units/W1` > collapse_shrunk_fraction;
    `frozen`: a hidden layer passes no signal: more than frozen_blocked of its units
    saturated (`units/saturation/h*`) or dead (`units/dead/h*`), or more than
    frozen_saturation while every `collapse/change/*` < frozen_change;
    `blob`: otherwise.
    """
    t = thresholds
    bad = [k for k in ("loss",) if not all(map(math.isfinite, history.get(k, ())))]
    bad += [
        k
        for k, v in history.items()
        if (k == "blob/mse" or k.startswith("collapse/max_abs/")) and v and not math.isfinite(v[-1])
    ]
    if bad:
        return "diverged", f"non-finite {', '.join(sorted(bad))}"
    ev = _last(history, "blob/ev")
    if ev is None or not math.isfinite(ev):
        return "unknown", "no blob metrics recorded: nothing to judge the run by"
    kl = _last(history, "latent/kl_total")
    if kl is not None and math.isfinite(kl) and kl < t.posterior_kl:
        return "posterior_collapse", (
            f"KL = {kl:.3g} < {t.posterior_kl:g} nats per image: the code carries (almost) "
            f"nothing, EV = {ev:.3g}")
    rho = _last(history, "collapse/norm_ratio/W1")
    shrunk = _last(history, "collapse/shrunk_units/W1")
    if ev >= t.blob_ev:
        if rho is not None and rho < t.collapse_norm_ratio:
            return "healthy", f"EV = {ev:.3g} (though ||W1||/||W1(0)|| = {rho:.3g})"
        return "healthy", f"EV = {ev:.3g}"
    low = f"EV = {ev:.3g} < {t.blob_ev:g}"
    if rho is not None and rho < t.collapse_norm_ratio:
        return "collapsed", f"||W1||/||W1(0)|| = {rho:.3g} < {t.collapse_norm_ratio:g}, {low}"
    if shrunk is not None and shrunk > t.collapse_shrunk_fraction:
        return "collapsed", (
            f"{shrunk:.0%} of first-layer units shrank (> {t.collapse_shrunk_fraction:.0%}), "
            f"{low}")
    blocked = blocked_layers(history)
    if blocked:
        layer = max(blocked, key=lambda k: blocked[k][0])
        share, word = blocked[layer]
        changes = [v[-1] for k, v in history.items() if k.startswith("collapse/change/") and v]
        moved = max(changes) if changes else math.inf
        if share > t.frozen_blocked:
            return "frozen", f"{share:.0%} of {layer} {word} (> {t.frozen_blocked:.0%}), {low}"
        if moved < t.frozen_change and share > t.frozen_saturation:
            return "frozen", (
                f"weights moved <= {moved:.3g} of their initial norm (< {t.frozen_change:g}) "
                f"with {share:.0%} of {layer} {word} (> {t.frozen_saturation:.0%}), {low}"
            )
    return "blob", f"{low}: no better than the mean image"


def provisional(
    history: Mapping[str, Sequence[float]], thresholds: Thresholds = Thresholds()
) -> str | None:
    """Why the verdict may still change (the run is short of its plateau), or None: fewer
    than two training epochs measured, or EV still rising more than provisional_ev_gain per
    epoch over the last measurement."""
    epochs, ev = list(history.get("epoch") or []), list(history.get("blob/ev") or [])
    if not ev or not all(map(math.isfinite, ev[-2:])):
        return None
    if len(epochs) != len(ev) or len(ev) < 3:
        done = int(epochs[-1]) if epochs else len(ev) - 1
        return f"only {done} training epoch(s) measured"
    gain = (ev[-1] - ev[-2]) / max(epochs[-1] - epochs[-2], 1.0)
    if gain > thresholds.provisional_ev_gain:
        return (f"EV still rising {gain:.3g} per epoch (> {thresholds.provisional_ev_gain:g}): "
                f"train longer")
    return None
