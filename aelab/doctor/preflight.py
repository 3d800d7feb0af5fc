"""The check before training: is the input itself the configured loss's minimum?

On one batch of targets, in float64, with no network: the loss is evaluated at the perfect
reconstruction (the logits whose prediction, `loss.prediction`, equals each target), at the
best constant images (the batch's mean image; all-white, all-black, mid-grey) and at nearby
points (the input nudged up and down, binarised, and moved down the loss's own gradient).
A proper reconstruction loss is lowest at the input; the 2017 mistakes are not (H4 prefers
white, H9 and H10 a distorted or binarised image). Separately, on the raw targets: whether
they leave the loss's domain, whether the loss keeps falling without bound as the output
saturates (H8: BCE on standardised targets), and whether it is finite in float32 at
saturated outputs (H11: log(0)).

Targets at the very edge of a bounded output range (MNIST's exact 0s and 1s) are moved
INTERIOR inside it for the minimum check: a sigmoid reaches them only in the limit, where a
density such as the continuous Bernoulli's is rightly unbounded. Costs a few ms.
"""

from __future__ import annotations

import copy
import math
from typing import Any

import torch

from aelab.data.domains import describe
from aelab.doctor.view import preflight_fix
from aelab.losses.reconstruction import ReconstructionLoss

INTERIOR = 0.01  # targets are kept this far (of the output range) inside a bounded range
NUDGE = 0.05  # logit units: the input nudged up and down
GRADIENT_STEPS = (0.01, 0.1, 1.0)  # steps down the loss's gradient, in units of its max |g|
TOLERANCE = 1e-4  # a candidate beats the input when lower by this x (|L(input)| + spread)
UNBOUNDED_DROP = 2.0  # per pixel: the loss falls more than this when the logit goes 20 -> 40
UNBOUNDED_SHARE = 0.01  # ... on more than this share of the pixels: unbounded below
BISECTION_STEPS = 60
BISECTION_RANGE = 1000.0  # logits: a continuous Bernoulli mean of 0.01 needs about -100
SATURATED_LOGIT = 20.0  # sigmoid(20) rounds to 1 in float32 (from 16.6 on)

# output activation -> (activation, the range of its values)
ACTIVATIONS = {
    "sigmoid": (torch.sigmoid, (0.0, 1.0)),
    "tanh": (torch.tanh, (-1.0, 1.0)),
    "identity": (lambda z: z, (-math.inf, math.inf)),
    "relu": (torch.relu, (0.0, math.inf)),
}
INVERSES = {"sigmoid": torch.logit, "tanh": torch.atanh}


def _per_pixel(loss: Any, logits: torch.Tensor, act: Any, target: torch.Tensor) -> torch.Tensor:
    return loss.per_pixel(logits, act(logits), target)


def _value(loss: Any, logits: torch.Tensor, act: Any, target: torch.Tensor) -> float:
    with torch.no_grad():
        return float(_per_pixel(loss, logits, act, target).mean())


def perfect_logits(loss: Any, target: torch.Tensor, output: str) -> torch.Tensor:
    """The logits whose prediction (`loss.prediction`, e.g. the continuous Bernoulli's mean)
    is `target`: the activation's inverse when the prediction is the output itself, else by
    bisection (a bounded output); the target itself for an unbounded output."""
    act, (lo, hi) = ACTIVATIONS[output]
    if math.isinf(lo) or math.isinf(hi):
        return target.clone()
    if type(loss).prediction is ReconstructionLoss.prediction:
        return INVERSES[output](target.clamp(lo, hi))
    # only the distinct values: a constant image is one value, a mean image one row
    values, where = torch.unique(target, return_inverse=True)
    low = torch.full_like(values, -BISECTION_RANGE)
    high = torch.full_like(values, BISECTION_RANGE)
    with torch.no_grad():
        for _ in range(BISECTION_STEPS):
            mid = (low + high) / 2
            below = loss.prediction(mid, act(mid)) < values
            low, high = torch.where(below, mid, low), torch.where(below, high, mid)
    return ((low + high) / 2)[where]


def _interior(target: torch.Tensor, output: str) -> torch.Tensor:
    lo, hi = ACTIVATIONS[output][1]
    if math.isinf(lo) or math.isinf(hi):
        return target
    margin = INTERIOR * (hi - lo)
    return target.clamp(lo + margin, hi - margin)


def _candidates(loss: Any, target: torch.Tensor, output: str,
                best: torch.Tensor) -> dict[str, torch.Tensor]:
    """Logits of the constant images and of the points near the input."""
    lo, hi = ACTIVATIONS[output][1]
    if math.isinf(lo) or math.isinf(hi):
        lo, hi = float(target.min()), float(target.max())
    margin = INTERIOR * (hi - lo) if hi > lo else INTERIOR
    const = {"mean image": target.mean(0, keepdim=True).expand_as(target),
             "all-white image": torch.full_like(target, hi - margin),
             "all-black image": torch.full_like(target, lo + margin),
             "mid-grey image": torch.full_like(target, (lo + hi) / 2),
             "binarised input": torch.where(target > (lo + hi) / 2, hi - margin, lo + margin)}
    found = {name: perfect_logits(loss, t, output) for name, t in const.items()}
    found["input nudged up"] = best + NUDGE
    found["input nudged down"] = best - NUDGE
    act = ACTIVATIONS[output][0]
    logits = best.clone().requires_grad_(True)
    value = _per_pixel(loss, logits, act, target).mean()
    (grad,) = torch.autograd.grad(value, logits, allow_unused=True)
    if grad is not None and torch.isfinite(grad).all() and float(grad.abs().max()) > 0:
        direction = grad / grad.abs().max()
        for step in GRADIENT_STEPS:
            found[f"input moved down the loss gradient ({step:g})"] = best - step * direction
    return found


def _unbounded(loss: Any, target: torch.Tensor, output: str) -> tuple[float, float]:
    """(share of pixels, mean drop per pixel) where the loss falls by more than
    UNBOUNDED_DROP as the logit doubles from 20 to 40 (either sign): unbounded below."""
    act, (lo, hi) = ACTIVATIONS[output]
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return 0.0, 0.0
    with torch.no_grad():
        at = {s: _per_pixel(loss, torch.full_like(target, s), act, target)
              for s in (-40.0, -20.0, 20.0, 40.0)}
    near = torch.minimum(at[-20.0], at[20.0])
    far = torch.minimum(at[-40.0], at[40.0])
    drop = (near - far).nan_to_num(0.0, posinf=0.0, neginf=0.0)
    falling = drop > UNBOUNDED_DROP
    if not bool(falling.any()):
        return 0.0, 0.0
    return float(falling.double().mean()), float(drop[falling].mean())


def _nonfinite_at_saturation(loss: Any, target: torch.Tensor, output: str) -> bool:
    """The loss in float32 at outputs saturated to 0/1 (logits of +-20): inf or NaN?"""
    act, (lo, hi) = ACTIVATIONS[output]
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return False
    t = target.float()
    with torch.no_grad():
        values = [_per_pixel(loss, torch.full_like(t, s), act, t) for s in (-20.0, 20.0)]
    return not all(bool(torch.isfinite(v).all()) for v in values)


def check_loss(loss: Any, target: torch.Tensor, output: str,
               target_range: tuple[float, float] | None = None) -> dict[str, Any]:
    """The preflight of `loss` on a batch of `target`s (the values the net must reproduce,
    (N, P)) for a net with the `output` activation. Returns {"problems": [sentences],
    "numbers": {...}}; no problem for a loss that the input minimises. Runs on one thread:
    on tensors this small, more threads only wait for each other (seconds on a busy machine)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _check_loss(loss, target, output, target_range)
    finally:
        torch.set_num_threads(threads)


def _check_loss(loss: Any, target: torch.Tensor, output: str,
                target_range: tuple[float, float] | None) -> dict[str, Any]:
    if output not in ACTIVATIONS:
        return {"problems": [], "numbers": {}, "skipped": f"output activation {output!r}"}
    target = target.detach().double().flatten(1)
    loss = copy.deepcopy(loss).double() if isinstance(loss, torch.nn.Module) else loss
    act = ACTIVATIONS[output][0]
    problems: list[str] = []
    numbers: dict[str, float] = {"target_min": float(target.min()),
                                 "target_max": float(target.max())}
    name = getattr(loss, "name", type(loss).__name__)
    if target_range is not None:
        lo, hi = target_range
        if numbers["target_min"] < lo or numbers["target_max"] > hi:
            problems.append(
                f"the targets span [{numbers['target_min']:.3g}, {numbers['target_max']:.3g}], "
                f"outside the {describe(target_range)} that loss={name} is defined for")
    share, drop = _unbounded(loss, target, output)
    if share > UNBOUNDED_SHARE:
        numbers |= {"unbounded_pixel_share": share, "unbounded_drop_per_pixel": drop}
        problems.append(
            f"loss={name} is unbounded below on these targets: on {share:.0%} of the pixels "
            f"it falls by {drop:.3g} more when the output logit goes from 20 to 40, so "
            f"saturating the output beats any reconstruction")
    if _nonfinite_at_saturation(loss, target, output):
        numbers["nonfinite_at_saturation"] = 1.0
        problems.append(
            f"loss={name} is inf or NaN in float32 once an output saturates to exactly 0 or 1 "
            f"(log(0)): a run that saturates a pixel diverges")
    inside = _interior(target, output)
    best = perfect_logits(loss, inside, output)
    at_input = _value(loss, best, act, inside)
    values = {k: _value(loss, z, act, inside)
              for k, z in _candidates(loss, inside, output, best).items()}
    finite = {k: v for k, v in values.items() if math.isfinite(v)}
    numbers["loss_at_input"] = at_input
    numbers |= {f"loss_at_{k.replace(' ', '_')}": v for k, v in values.items()
                if not k.startswith("input moved")}
    if not math.isfinite(at_input) and not finite:
        problems.append(f"loss={name} is not finite at the input nor at any point near it")
        return {"problems": problems, "numbers": numbers, "fatal": True}
    if finite:
        winner = min(finite, key=finite.get)
        spread = max(finite.values()) - min(finite.values())
        tol = TOLERANCE * (abs(at_input) + spread) + 1e-9 if math.isfinite(at_input) else 0.0
        if not math.isfinite(at_input) or finite[winner] < at_input - tol:
            numbers |= {"best_candidate_loss": finite[winner]}
            problems.append(
                f"the input is not loss={name}'s minimum: the {winner} scores "
                f"{finite[winner]:.4g} per pixel against {at_input:.4g} for a perfect "
                f"reconstruction (the mean image: {values['mean image']:.4g})")
            numbers["best_candidate"] = winner  # type: ignore[assignment]
    return {"problems": problems, "numbers": numbers}


def preflight_targets(data: Any, n: int = 64) -> torch.Tensor:
    """The first `n` training targets as the loss sees them (a stochastic normalisation's
    sample drawn with a fixed generator)."""
    train = data.splits["train"][:n]
    if getattr(data, "stochastic", False):
        train = data.normalization.sample(train, torch.Generator(train.device).manual_seed(0))
    return train


def check_before_training(loss: Any, data: Any, output: str) -> dict[str, Any]:
    """The preflight of a built run (`aelab.training.build`): a warning naming the cause
    `loss_misspecified` with its numbers when the loss fails it, before any step; an
    `aelab: error` (ConfigError) only when the loss is finite nowhere (nothing to train)."""
    import logging

    from aelab.errors import ConfigError

    report = check_loss(loss, preflight_targets(data), output, getattr(loss, "target_range", None))
    if report.get("fatal"):
        raise ConfigError(f"{'; '.join(report['problems'])}: the run cannot mean anything; "
                          f"choose another loss (loss=mse or loss=bce).")
    if report["problems"]:
        fix = preflight_fix(report, getattr(loss, "name", None), data.normalization.name)
        logging.getLogger("aelab").warning(
            "doctor, before training: loss_misspecified: %s. Fix: %s",
            "; ".join(report["problems"]), " or ".join(fix))
    return report


def preflight_from_config(config: Any) -> dict[str, Any] | None:
    """The preflight of a finished run that has none recorded, on synthetic targets (sums of
    Gaussian bumps in [0, 1], normalised as the run's config says): no data to load."""
    from hydra.utils import instantiate

    from aelab.data.sources import synthetic_images
    from aelab.models.parts import auto_output_activation

    try:
        loss, norm = instantiate(config["loss"]), instantiate(config["normalization"])
        images = synthetic_images(64, seed=0).unsqueeze(1)
        targets = norm.fit(images).encode(images.flatten(1))
        targets = norm.sample(targets, torch.Generator().manual_seed(0))
        output = str((config.get("model") or {}).get("output_activation", "auto"))
        if output == "auto":
            output = loss.output_activation or auto_output_activation(norm.target_range)
        report = check_loss(loss, targets, output, loss.target_range)
    except Exception:  # a config this version cannot build: no preflight
        return None
    return report | {"targets": "synthetic"}
