"""The causes of a failed run: one small pure function per cause over the run's record.

Each rule takes a `Run` (aelab.doctor.view: the symptom, the diagnostics history, the
training history, the config when known, the check before training) and returns a `Cause`
(its id, a confidence, the measurements it rests on, one sentence, fixes as aelab
overrides) or None. A healthy (or unknown) run gets none. Confidences rank the causes: the
ones that explain the others (a loss the input does not minimise, a posterior that carries
nothing, an initial scale far off) come before the mechanisms they set off (saturation,
dead units), and the step size last. docs/doctor.md lists every rule and its thresholds.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aelab.doctor.view import FAILED, Run, fmt, preflight_fix

PENALTY_RATIO = 1.0  # penalty gradient >= this x the data gradient at W1 ...
PENALTY_SHRINK = 0.9  # ... while ||W1|| / ||W1(0)|| fell below this
SATURATED = 0.5  # a hidden sigmoid/tanh layer with more units than this in its tails
DEAD = 0.5  # a hidden ReLU-like layer with more dead units than this
UPDATE_LARGE = 0.1  # median realised update ratio over the layers above this: too large
UPDATE_SMALL = 1e-4  # ... below this (with W1 moved < MOVED_LITTLE): too small
STOPPED = 1e-3  # the last median update below this x the largest: the updates stopped
MOVED_LITTLE = 0.1  # ||W1 - W1(0)|| / ||W1(0)|| below this: the weights barely moved
PLATEAU_D = 0.2  # mean-image distance D below this: the predictions sit at the mean image ...
PLATEAU_FALL = 0.01  # ... and the training loss fell less than this share in the last epoch
LOSS_RISE = 0.05  # an epoch's training loss above the previous one by more than this share
GAIN_HIGH, GAIN_LOW = 4.0, 0.1  # initial rms(W) x sqrt(fan-in) outside these: bad init scale
POSTERIOR_SIGMA = 0.3  # a Gaussian likelihood's fixed sigma from which sigma^2 is the lever
SGD_LIKE = ("torch.optim.SGD", "torch.optim.Adadelta")


@dataclass
class Cause:
    cause: str
    confidence: float
    evidence: dict[str, Any]
    explanation: str
    fix: list[str] = field(default_factory=list)


def loss_misspecified(run: Run) -> Cause | None:
    """The check before training found that the input is not the loss's minimum, that the
    targets leave its domain, that it is unbounded below or not finite at saturation."""
    problems = (run.preflight or {}).get("problems") or []
    if run.symptom not in FAILED or run.symptom == "posterior_collapse" or not problems:
        return None
    numbers = (run.preflight or {}).get("numbers", {})
    keep = ("loss_at_input", "best_candidate", "best_candidate_loss", "loss_at_mean_image",
            "target_min", "target_max", "unbounded_pixel_share", "nonfinite_at_saturation")
    evidence = {k: fmt(numbers[k]) for k in keep if k in numbers}
    evidence["loss"] = run.choice("loss")
    return Cause("loss_misspecified", 0.95, evidence,
                 f"{problems[0]}; training follows the loss away from the input.",
                 preflight_fix(run.preflight, run.choice("loss"), run.choice("normalization")))


def penalty(run: Run) -> Cause | None:
    """An L2 penalty or weight decay whose gradient at W1 outweighs the data term's while W1
    shrinks (measured: grads/penalty/W1 against grads/data/W1)."""
    l2, wd = run.number("l2_penalty"), run.number("optimizer.weight_decay")
    data, pen = run.series("grads/data/W1"), run.series("grads/penalty/W1")
    rho = run.last("collapse/norm_ratio/W1")
    if run.symptom not in FAILED - {"posterior_collapse", "diverged"} or rho is None:
        return None
    fixes = ([] if not l2 else ["l2_penalty=0"]) + ([] if not wd else ["optimizer.weight_decay=0"])
    evidence: dict[str, Any] = {"collapse/norm_ratio/W1": fmt(rho)}
    if l2:
        evidence["l2_penalty"] = l2
    if wd:
        evidence["optimizer.weight_decay"] = wd
    if data and pen and len(data) == len(pen):
        ratios = [p / d if d > 0 else math.inf for d, p in zip(data, pen)]
        at = max(range(len(ratios)), key=lambda i: ratios[i])
        if ratios[at] < PENALTY_RATIO or rho >= PENALTY_SHRINK or pen[at] <= 0:
            return None
        evidence |= {"grads/data/W1": fmt(data[at]), "grads/penalty/W1": fmt(pen[at]),
                     "penalty/data": fmt(ratios[at]), "at_measurement": at + 1}
        return Cause("penalty", 0.8, evidence,
                     f"the weight penalty's gradient at W1 was {fmt(ratios[at])} x the data "
                     f"term's, so W1 shrank to {fmt(rho)} of its initial norm.",
                     fixes or ["remove the weight penalty on W1"])
    if (l2 or wd) and rho < 0.5:  # a record without the gradient split: config and W1 alone
        return Cause("penalty", 0.6, evidence,
                     f"W1 shrank to {fmt(rho)} of its initial norm under a weight penalty "
                     f"(its gradient was not measured).", fixes)
    return None


def _blocked(run: Run, kind: str, share: float) -> tuple[str, float] | None:
    layers = {k.rsplit("/", 1)[1]: v for k, v in run.finals(f"units/{kind}/h").items()}
    if not layers:
        return None
    layer = max(layers, key=layers.get)
    return (layer, layers[layer]) if layers[layer] > share else None


def saturation(run: Run) -> Cause | None:
    """A hidden sigmoid/tanh layer with most of its units in the flat tails."""
    found = _blocked(run, "saturation", SATURATED)
    if run.symptom not in FAILED - {"posterior_collapse"} or found is None:
        return None
    layer, share = found
    grads = run.series("grads/norm/W1")
    evidence = {f"units/saturation/{layer}": fmt(share), "layer": run.layer(layer)}
    if grads:
        evidence |= {"grads/norm/W1 first": fmt(grads[0]), "grads/norm/W1 last": fmt(grads[-1])}
    act = run.choice("activation")
    fix = ["activation=relu"] if act in ("sigmoid", "tanh") else [
        f"replace the activation at {run.layer(layer)} by a ReLU"]
    why = ""
    if (big := _big_steps(run)) is not None:
        evidence["grads/update_ratio median max"] = fmt(big)
        fix = [*_lr_fix(run, 0.1), *fix]
        why = f", driven there by steps of {fmt(big)} of the weights' norm"
    return Cause("saturation", 0.6, evidence,
                 f"{share:.0%} of {run.layer(layer)}'s units sit in the flat tails{why}, where "
                 f"the slope is < 4% of its maximum: the gradients below it vanish.", fix)


def _big_steps(run: Run) -> float | None:
    """The largest median update ratio of the run when above UPDATE_LARGE: steps that
    changed the weights by a sizeable share of their norm (what kills or saturates units)."""
    updates = _median_update(run)
    return max(updates) if updates and max(updates) > UPDATE_LARGE else None


def dead_units(run: Run) -> Cause | None:
    """A hidden ReLU-like layer with most of its units dead on every probe image (after
    large steps, the step is the first fix)."""
    found = _blocked(run, "dead", DEAD)
    if run.symptom not in FAILED - {"posterior_collapse"} or found is None:
        return None
    layer, share = found
    evidence: dict[str, Any] = {f"units/dead/{layer}": fmt(share), "layer": run.layer(layer)}
    fix = ["activation=leaky_relu"] if run.choice("activation") else [
        f"replace the ReLU at {run.layer(layer)} by a LeakyReLU"]
    why = ""
    if (big := _big_steps(run)) is not None:
        evidence["grads/update_ratio median max"] = fmt(big)
        fix = [*_lr_fix(run, 0.1), *fix]
        why = f" after steps that changed the weights by {fmt(big)} of their norm"
    return Cause("dead_units", 0.6, evidence,
                 f"{share:.0%} of {run.layer(layer)}'s units are off on every probe image{why}, "
                 f"so they pass neither signal nor gradient.", fix)


def _median_update(run: Run) -> list[float]:
    """The median over the layers of the realised update ratio, per measurement."""
    found = [v for k, v in run.all_series("grads/update_ratio/W").items()]
    if not found or len({len(v) for v in found}) != 1:
        return []
    return [sorted(col)[len(col) // 2] for col in zip(*found)]


def _lr_fix(run: Run, factor: float) -> list[str]:
    lr = run.number("optimizer.lr")
    return [f"optimizer.lr={lr * factor:.3g}"] if lr else []


def _thrown_off(run: Run) -> bool:
    """The predictions ended further from the mean image than the data (D > 1) and further
    than they started: something threw them off, they did not merely stay at the init."""
    d = run.series("blob/d")
    return len(d) >= 2 and d[-1] > 1.0 and d[-1] > d[0] * 1.05


def step_too_large(run: Run) -> Cause | None:
    """Divergence; a training loss that rises epoch over epoch; a blow-up (a step above
    UPDATE_LARGE of the weights' norm, or predictions further from the mean image than the data
    (D > 1), after which the updates stopped); or, weaker, steady updates above UPDATE_LARGE
    (while W1 keeps its norm)."""
    if run.symptom not in FAILED - {"posterior_collapse"}:
        return None
    evidence: dict[str, Any] = {"optimizer.lr": run.number("optimizer.lr")}
    fix = _lr_fix(run, 0.1)
    reduction = run.text("loss.reduction")
    if reduction and reduction != "mean":
        evidence["loss.reduction"] = reduction
        fix = ["loss.reduction=mean", *fix]
    if run.symptom == "diverged":
        evidence["status"] = run.status
        return Cause("step_too_large", 0.75, evidence,
                     "the loss or the weights became non-finite: a step overshot.", fix)
    loss = [v for v in run.train_loss() if math.isfinite(v)]
    rises = sum(b > a * (1 + LOSS_RISE) for a, b in zip(loss, loss[1:]))
    if rises and loss[-1] > min(loss) * (1 + LOSS_RISE):
        evidence |= {"train/loss": [fmt(v) for v in loss], "epochs_loss_rose": rises}
        return Cause("step_too_large", 0.75, evidence,
                     f"the training loss rose in {rises} epoch(s) and ends above its best: the "
                     f"steps overshoot.", fix)
    updates, d = _median_update(run), run.last("blob/d")
    stopped = bool(updates) and updates[-1] < STOPPED * max(max(updates), UPDATE_LARGE)
    if stopped and (max(updates) > UPDATE_LARGE or _thrown_off(run)):
        evidence |= {"grads/update_ratio median": [fmt(u) for u in updates], "blob/d": fmt(d)}
        return Cause("step_too_large", 0.75, evidence,
                     f"the weights were thrown by up to {fmt(max(updates))} of their norm in "
                     f"one step{'' if d is None else f' and the output stuck at D = {fmt(d)}'}"
                     f", after which the updates stopped: a step blew the net up.", fix)
    rho = run.series("collapse/norm_ratio/W1")
    big = [u for i, u in enumerate(updates) if u > UPDATE_LARGE
           and (not rho or i + 1 >= len(rho) or rho[i + 1] >= 0.5)]
    if big:  # large but steady steps: below the units they kill or saturate
        evidence["grads/update_ratio median"] = fmt(max(big))
        return Cause("step_too_large", 0.5, evidence,
                     f"one step changed the weights by up to {fmt(max(big))} of their norm "
                     f"(> {UPDATE_LARGE:g}): the steps are too large to settle.", fix)
    return None


def step_too_small(run: Run) -> Cause | None:
    """Nothing saturated or dead, and weights that barely moved (W1 < MOVED_LITTLE of its
    norm, updates < UPDATE_SMALL, the predictions not thrown off), or predictions on the
    mean-image plateau (D < PLATEAU_D) with a training loss that fell less than PLATEAU_FALL
    in the last epoch."""
    if run.symptom != "blob":
        return None
    if _blocked(run, "saturation", SATURATED) or _blocked(run, "dead", DEAD):
        return None
    moved, updates = run.last("collapse/change/W1"), _median_update(run)
    d, loss = run.last("blob/d"), [v for v in run.train_loss() if math.isfinite(v)]
    fall = (loss[-2] - loss[-1]) / abs(loss[-2]) if len(loss) >= 2 and loss[-2] else None
    evidence = {"collapse/change/W1": fmt(moved), "optimizer.lr": run.number("optimizer.lr"),
                "optimizer": run.choice("optimizer")}
    at_mean = d is not None and d < PLATEAU_D
    if moved is not None and updates and moved < MOVED_LITTLE and updates[-1] < UPDATE_SMALL \
            and not _thrown_off(run):
        evidence["grads/update_ratio median"] = fmt(updates[-1])
        why = (f"W1 moved {fmt(moved)} of its initial norm and each step {fmt(updates[-1])} "
               f"of the weights")
    elif at_mean and fall is not None and fall < PLATEAU_FALL:
        evidence |= {"blob/d": fmt(d), "last epoch's loss fall": fmt(fall)}
        why = (f"the predictions sit at the mean image (D = {fmt(d)}) and the loss fell "
               f"{fall:.2%} in the last epoch")
    else:
        return None
    fix = _lr_fix(run, 10.0)
    if run.text("optimizer._target_") in SGD_LIKE:
        fix = ["optimizer=adam", *fix]
    return Cause("step_too_small", 0.55, evidence,
                 f"{why}: the run is still on the mean-image plateau, its steps too small (or "
                 f"too few) to leave it.", fix or ["a larger learning rate, or more epochs"])


def init_scale(run: Run) -> Cause | None:
    """Initial weights far from a unit gain (rms(W) x sqrt(fan-in) outside [GAIN_LOW,
    GAIN_HIGH] at epoch 0), or from the config, an init.std of 0.5 or more."""
    if run.symptom not in FAILED - {"posterior_collapse"}:
        return None
    gains = {k.rsplit("/", 1)[1]: v[0] for k, v in run.all_series("weights/gain/W").items() if v}
    std = run.number("init.std")
    evidence: dict[str, Any] = {}
    if gains:
        off = {k: g for k, g in gains.items() if not GAIN_LOW <= g <= GAIN_HIGH}
        if not off:
            return None
        evidence = {f"weights/gain/{k} at init": fmt(g) for k, g in off.items()}
        word = "large" if max(off.values()) > GAIN_HIGH else "small"
    elif std and std >= 0.5:
        evidence, word = {"init.std": std}, "large"
    else:
        return None
    if std:
        evidence["init.std"] = std
    initial = {k.rsplit("/", 1)[1]: v[0] for k, v in run.all_series("units/saturation/h").items()
               if v and v[0] > SATURATED}
    if initial:
        evidence["saturated at init"] = {k: fmt(v) for k, v in initial.items()}
    init = run.choice("init")
    fix = ["init=default"] if init not in (None, "default") else (
        ["init=xavier"] if init else ["initialise the weights with a unit gain (Glorot or He)"])
    bound = f"more than {GAIN_HIGH:g}" if word == "large" else f"less than {GAIN_LOW:g}"
    effect = "saturate or blow up" if word == "large" else "see almost no signal"
    return Cause("init_scale", 0.85, evidence,
                 f"the initial weights are too {word}: a layer scales its input by {bound}, "
                 f"so units {effect} from the first step.", fix)


def posterior_collapse(run: Run) -> Cause | None:
    """A VAE whose KL per image fell to (almost) nothing, with the lever that did it: beta,
    or beta x sigma^2 for a Gaussian likelihood of fixed sigma."""
    if run.symptom != "posterior_collapse":
        return None
    beta = run.number("model.beta", 1.0)
    per_dim = [v for v in run.finals("latent/kl/z").values()]
    evidence: dict[str, Any] = {"latent/kl_total": fmt(run.last("latent/kl_total")),
                                "latent/active_units": run.last("latent/active_units"),
                                "model.beta": beta}
    if per_dim:
        evidence["max KL of one dimension"] = fmt(max(per_dim))
    sigma = run.number("loss.sigma") if run.text("loss._target_") == "aelab.losses.MSE" else None
    fix: list[str] = []
    if sigma and sigma >= POSTERIOR_SIGMA:
        evidence |= {"loss.sigma": sigma, "beta x sigma^2": fmt(beta * sigma**2)}
        lever = (f"beta x sigma^2 = {fmt(beta * sigma**2)}: the Gaussian likelihood of sigma "
                 f"{fmt(sigma)} pays too little for a reconstruction against the KL")
        fix.append("loss.sigma=0.1")
    elif beta > 1:
        lever = f"beta = {fmt(beta)} weighs the KL above the reconstruction"
    else:
        lever = "the KL term beat the likelihood early in training"
        fix += ["model.kl_warmup_epochs=2", "model.free_bits=0.5"]
    if beta > 1:
        fix.append("model.beta=1")
    return Cause("posterior_collapse", 0.9, evidence,
                 f"the code carries {fmt(run.last('latent/kl_total'))} nats per image: {lever}, "
                 f"so the decoder draws the mean image.", fix)


RULES: tuple[Callable[[Run], Cause | None], ...] = (
    loss_misspecified, posterior_collapse, init_scale, penalty, step_too_large, saturation,
    dead_units, step_too_small)
