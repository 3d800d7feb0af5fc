"""Value ranges of data, targets and output activations, and their compatibility."""

from __future__ import annotations

import math

Range = tuple[float, float]

UNIT: Range = (0.0, 1.0)
SYMMETRIC: Range = (-1.0, 1.0)
POSITIVE: Range = (0.0, math.inf)
REAL: Range = (-math.inf, math.inf)


def covers(outer: Range, inner: Range) -> bool:
    """True when every value of `inner` lies in the closure of `outer`."""
    return outer[0] <= inner[0] and inner[1] <= outer[1]


def describe(r: Range) -> str:
    """A range as a reader writes it, e.g. '[0, 1]' or '(-inf, inf)'."""

    def fmt(v: float) -> str:
        return "inf" if v == math.inf else "-inf" if v == -math.inf else f"{v:g}"

    return f"[{fmt(r[0])}, {fmt(r[1])}]"
