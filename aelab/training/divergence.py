"""Advice for a run whose loss or weights became non-finite: its likely causes, from its config."""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig


def _target_name(node: Any) -> str:
    """The class or function name of a config node's _target_ (when no group choice is known)."""
    return str(node.get("_target_", "?") if node else "?").rsplit(".", 1)[-1]


def _fmt(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def divergence_causes(cfg: DictConfig, choices: dict[str, str] | None = None) -> list[str]:
    """Likely causes of a non-finite loss for this configuration: the specific ones (a loss
    without a clamp, a large init, a summed reduction) first, then the learning rate."""
    choices = choices or {}
    causes: list[str] = []
    loss_cfg = cfg.get("loss") or {}
    loss = choices.get("loss") or _target_name(loss_cfg)
    opt = choices.get("optimizer") or _target_name(cfg.optimizer).lower()
    eps = loss_cfg.get("eps")
    unclamped = str(loss_cfg.get("_target_", "")).endswith(".UnclampedProbabilityBCE")
    if (eps is not None and eps == 0) or unclamped:
        named = f"loss={loss}" + ("" if unclamped else " with loss.eps=0")
        causes.append(
            f"{named} takes the log of probabilities with no clamp: a sigmoid output that "
            f"rounds to 0 or 1 gives log(0) = -inf, and 0 * inf = nan. Use a clamp "
            f"(loss=bce_clamped_probs, loss.eps=1e-7), or loss=bce (from the logits, always "
            f"finite)."
        )
    lr = cfg.optimizer.get("lr")
    reduction = loss_cfg.get("reduction")
    if reduction in ("image_sum", "batch_sum"):
        pixels = "the pixels per image (784 for MNIST)"
        scale = pixels if reduction == "image_sum" else f"{pixels} x data.batch_size"
        causes.append(
            f"loss.reduction={reduction} makes the gradient {scale} times that of "
            f"reduction=mean; lower optimizer.lr by that factor, or use loss.reduction=mean."
        )
    init = choices.get("init") or _target_name(cfg.get("init")).removeprefix("init_")
    std = cfg.init.get("std") if cfg.get("init") else None
    if std is not None and std >= 0.5:
        causes.append(
            f"init={init} with init.std={_fmt(std)}: weights that large give huge "
            f"pre-activations and gradients; try init.std=0.01 or init=default."
        )
    if lr is not None:
        causes.append(
            f"optimizer={opt} with optimizer.lr={_fmt(lr)}: a step too large makes the loss "
            f"grow without bound; try optimizer.lr={_fmt(lr / 10)}."
        )
    output = cfg.model.get("output_activation")
    normalization = choices.get("normalization") or _target_name(cfg.normalization).lower()
    activation = choices.get("activation") or _target_name(cfg.activation).lower()
    if activation in ("relu", "elu", "leaky_relu", "leakyrelu", "gelu") and (
        output in ("identity", "relu") or normalization == "standard"
    ):
        causes.append(
            f"activation={activation} with an unbounded output layer "
            f"(normalization={normalization}, model.output_activation={output}): nothing "
            f"bounds the reconstruction, so one large step can make it overflow."
        )
    if loss == "gaussian_nll":
        causes.append(
            "loss=gaussian_nll learns log sigma^2: when it runs away the loss scale "
            "exp(-log sigma^2) overflows; lower optimizer.lr."
        )
    l2 = cfg.get("l2_penalty") or 0
    if lr is not None and l2 and 2 * lr * l2 >= 1:
        causes.append(
            f"l2_penalty={_fmt(l2)} with optimizer.lr={_fmt(lr)}: 2 x lr x l2_penalty >= 1, so "
            f"the weight decay step alone overshoots; lower one of them."
        )
    return causes
