"""The run's verdict (a symptom: healthy, blob, collapsed, ...) from its diagnostics history."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields

from aelab.errors import ConfigError

VERDICTS = ("healthy", "blob", "collapsed", "frozen", "diverged", "posterior_collapse")
# posterior_collapse: a VAE's, set by Diagnostics.summary (aelab.diagnostics.latent)


@dataclass(frozen=True)
class Thresholds:
    """Limits for `verdict`; kept in conf/callbacks/default.yaml (diagnostics.thresholds)."""

    blob_ev: float = 0.1  # blob when the final EV is below this
    collapse_norm_ratio: float = 0.5  # collapsed when ||W1||/||W1(0)|| falls below this ...
    collapse_shrunk_fraction: float = 0.5  # ... or this fraction of first-layer units shrank
    frozen_change: float = 0.05  # frozen when every layer moved less than this from init ...
    frozen_saturation: float = 0.5  # ... and the most saturated hidden layer is above this

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


def verdict(
    history: Mapping[str, Sequence[float]], thresholds: Thresholds = Thresholds()
) -> tuple[str, str]:
    """(verdict, reason) from a diagnostics history keyed by TensorBoard tag.

    Checked in order, the first that applies wins:
    `diverged`: any `loss` value, the final `blob/mse` or a final `collapse/max_abs/*` is not
    finite (NaN or inf weights or outputs);
    `collapsed`: `collapse/norm_ratio/W1` < collapse_norm_ratio, or
    `collapse/shrunk_units/W1` > collapse_shrunk_fraction;
    `frozen`: every `collapse/change/*` < frozen_change and the most saturated hidden
    layer has more than frozen_saturation of its `units/saturation/h*` in the tails;
    `blob`: final `blob/ev` < blob_ev; otherwise `healthy`.
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
    rho = _last(history, "collapse/norm_ratio/W1")
    if rho is not None and rho < t.collapse_norm_ratio:
        return "collapsed", f"||W1||/||W1(0)|| = {rho:.3g} < {t.collapse_norm_ratio:g}"
    shrunk = _last(history, "collapse/shrunk_units/W1")
    if shrunk is not None and shrunk > t.collapse_shrunk_fraction:
        return "collapsed", (
            f"{shrunk:.0%} of first-layer units shrank (> {t.collapse_shrunk_fraction:.0%})"
        )
    changes = [v[-1] for k, v in history.items() if k.startswith("collapse/change/") and v]
    saturation = {
        k.rsplit("/", 1)[1]: v[-1]
        for k, v in history.items()
        if k.startswith("units/saturation/h") and v
    }
    if changes and saturation:
        moved, layer = max(changes), max(saturation, key=saturation.get)
        if moved < t.frozen_change and saturation[layer] > t.frozen_saturation:
            return "frozen", (
                f"weights moved <= {moved:.3g} of their initial norm (< {t.frozen_change:g}) "
                f"with {saturation[layer]:.0%} of {layer} saturated (> {t.frozen_saturation:.0%})"
            )
    ev = _last(history, "blob/ev")
    if ev is not None and ev < t.blob_ev:
        return "blob", f"EV = {ev:.3g} < {t.blob_ev:g}: no better than the mean image"
    if ev is None:
        return "healthy", "no blob metrics recorded"
    return "healthy", f"EV = {ev:.3g}"
