"""Which runs of a sweep can be trained as one stacked model, in groups of at most `stack`.

Runs share a group when their configs are equal but for STACK_FREE_KEYS (seed, loss, init,
l2_penalty, optimizer.lr, normalisation and the run folder): the same MLP shape, activation,
resolved output activation, data, batch size, epochs, optimiser (class and every setting but
lr: one optimiser steps the whole stack, aelab.stacked.group.LrScale gives each slot its lr)
and trainer. Each normalisation in a group is a data set of its own (loaded once, shared by
its slots). A run that cannot be stacked at all
(`why_not_stackable`) runs alone, as `python -m aelab` runs it. No torch is imported here.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from omegaconf import DictConfig, OmegaConf

from aelab.config import plain_without
from aelab.errors import ConfigError

MLP_PARTS = {"encoder": "aelab.models.MLPEncoder", "decoder": "aelab.models.MLPDecoder"}
STACK_FREE_KEYS = ("seed", "loss", "init", "l2_penalty", "paths", "resume", "optimizer.lr",
                   "normalization", "allow_out_of_range_targets")
LOSSES_WITH_PARAMETERS = ("aelab.losses.GaussianNLL",)
# the callbacks a stacked group runs per slot (the progress bar: one line per group epoch)
CALLBACKS = ("aelab.training.callbacks.ReconstructionGrid",
             "aelab.training.callbacks.LastCheckpoint",
             "aelab.training.callbacks.progress_bar", "aelab.diagnostics.callback.Diagnostics")
# element-wise optimisers whose step is lr x an lr-free update (see stacked_train.LrScale)
OPTIMIZERS = ("torch.optim.Adam", "torch.optim.AdamW", "torch.optim.SGD", "torch.optim.RMSprop",
              "torch.optim.Adadelta")


def why_not_stackable(cfg: DictConfig) -> str | None:
    """Why this run cannot share a stacked model (the option to change), or None."""
    for part, target in MLP_PARTS.items():
        found = OmegaConf.select(cfg, f"model.{part}._target_")
        if found != target:
            return f"model.{part} is {found}, not an MLP (stacking takes model=mlp or seed)"
    if cfg.model.get("variational", False):
        return "model.variational=true (a VAE)"
    if OmegaConf.select(cfg, "loss._target_") in LOSSES_WITH_PARAMETERS:
        return f"loss={OmegaConf.select(cfg, 'loss.name') or cfg.loss._target_} trains a " \
               f"parameter of its own"
    optimizer = OmegaConf.select(cfg, "optimizer._target_")
    if optimizer not in OPTIMIZERS:
        return f"optimizer._target_={optimizer} (stacking takes {', '.join(OPTIMIZERS)})"
    lr = OmegaConf.select(cfg, "optimizer.lr")
    if not isinstance(lr, (int, float)) or isinstance(lr, bool) or lr < 0:
        return f"optimizer.lr={lr} (stacking needs a number >= 0)"
    for name, callback in (cfg.get("callbacks") or {}).items():
        target = OmegaConf.select(callback, "_target_") if callback else None
        if callback and target not in CALLBACKS:
            return f"callbacks.{name} ({target}) is not one a stacked group runs per run"
    scheduler = OmegaConf.select(cfg, "scheduler.name") or "none"
    if scheduler != "none":
        return f"scheduler={scheduler}"
    trainer = cfg.trainer
    if (trainer.get("accumulate_grad_batches") or 1) != 1:
        return f"trainer.accumulate_grad_batches={trainer.accumulate_grad_batches}"
    if trainer.get("gradient_clip_val"):
        return f"trainer.gradient_clip_val={trainer.gradient_clip_val}"
    if (trainer.get("max_steps") or -1) > 0:
        return f"trainer.max_steps={trainer.max_steps}"
    if not isinstance(trainer.get("max_epochs"), int) or trainer.max_epochs < 1:
        return f"trainer.max_epochs={trainer.get('max_epochs')} (stacking needs a number >= 1)"
    if str(trainer.get("precision", "32")) not in ("32", "32-true"):
        return f"trainer.precision={trainer.precision}"
    return None


def output_activation(cfg: DictConfig) -> str:
    """model.output_activation as the run resolves it (auto: the loss's, else the targets')."""
    from aelab.config.validate import instantiate
    from aelab.models import auto_output_activation

    output = cfg.model.output_activation
    if output != "auto":
        return str(output)
    loss = instantiate(cfg.loss)
    return loss.output_activation or auto_output_activation(
        instantiate(cfg.normalization).target_range)


def group_key(cfg: DictConfig) -> str:
    """Equal for runs that one stacked model can train (interpolations unresolved, so the
    run folder that callbacks and logger point to does not count)."""
    plain = plain_without(cfg, STACK_FREE_KEYS, resolve=False)
    plain["model"]["output_activation"] = output_activation(cfg)
    return json.dumps(plain, sort_keys=True, default=str)


@dataclass
class Plan:
    """Groups of run indices (each trained as one stacked model) and the runs left alone."""

    groups: list[list[int]] = field(default_factory=list)
    single: list[tuple[int, str]] = field(default_factory=list)  # (run, why)


def check_stack(stack: Any) -> int:
    if not (isinstance(stack, int) and not isinstance(stack, bool) and stack >= 1):
        raise ConfigError(f"stack={stack} must be an integer >= 1: the most runs one stacked "
                          f"model trains, e.g. stack=8.")
    return stack


def plan_groups(cfgs: Sequence[DictConfig], stack: int) -> Plan:
    """Split the runs into groups of at most `stack` stackable runs with equal group keys,
    in sweep order, as few groups per key as `stack` allows and of balanced sizes (18 runs,
    stack=8: 6, 6, 6); a group of one is still stacked (K = 1)."""
    check_stack(stack)
    plan, by_key = Plan(), {}
    for i, cfg in enumerate(cfgs):
        why = why_not_stackable(cfg)
        if why is not None:
            plan.single.append((i, why))
        else:
            by_key.setdefault(group_key(cfg), []).append(i)
    for members in by_key.values():
        n = -(-len(members) // stack)  # as few groups as `stack` allows, of balanced sizes
        size, extra = divmod(len(members), n)
        start = 0
        for j in range(n):
            end = start + size + (j < extra)
            plan.groups.append(members[start:end])
            start = end
    return plan


def short_names(names: Sequence[str], sep: str = ",") -> list[str]:
    """Run folder names without the key=value items that every run shares."""
    items = [name.split(sep) for name in names]
    shared = set.intersection(*(set(i) for i in items)) if len(items) > 1 else set()
    return [sep.join(i for i in parts if i not in shared) or "(no overrides)" for parts in items]


def describe_plan(plan: Plan, names: Sequence[str], stack: int) -> str:
    """The plan as printed before training: every group with its runs (by the overrides that
    tell them apart), then the single runs."""
    names = short_names(names)
    runs = sum(len(g) for g in plan.groups) + len(plan.single)
    if not runs:
        return "stacked plan: no run to train"
    sizes = ", ".join(str(len(g)) for g in plan.groups)
    grouped = (f"{len(plan.groups)} stacked group(s) of at most {stack} ({sizes} runs)"
               if plan.groups else "no stacked group")
    lines = [f"stacked plan: {runs} run{'s' if runs != 1 else ''} -> {grouped}, "
             f"{len(plan.single)} single run(s)"]
    for n, group in enumerate(plan.groups, start=1):
        lines.append(f"  group {n} ({len(group)} runs): " + "; ".join(names[i] for i in group))
    for i, why in plan.single:
        lines.append(f"  single: {names[i]} (cannot be stacked: {why})")
    return "\n".join(lines)
