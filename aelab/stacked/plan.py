"""Which runs of a sweep can be trained as one stacked model, in groups of at most `stack`.

One table says what a group shares and what it does not; the plan, the refusal messages and
the group's Trainer all read it:

- VARY_IN_GROUP: the keys that may differ between the runs of one group, each slot keeping
  its own (seed, loss, init, l2_penalty, optimizer.lr, normalisation, the run folder).
- every other key splits groups: runs share a group only when their configs are equal but
  for VARY_IN_GROUP (the same model, activation, resolved output activation, data, batch
  size, optimiser class and settings but lr, trainer, callbacks, steps_per_call, ...).
- GROUP_TRAINER_KEYS: the trainer.* keys a group honours: passed to the group's one Lightning
  Trainer (equal in a group, since they split groups), so each run trains as it would alone;
  GROUP_MODULE_KEYS (clipping, accumulation): applied per slot by the group's module, as a
  single run's module applies them.
- TRAINER_NEUTRAL: trainer.* keys a group accepts at these values only (nothing to do); any
  other trainer.* key not null, or a neutral one at another value, makes the run train alone, with
  the reason (`why_not_stackable`) printed in the plan. Nothing is dropped silently.

Which nets stack depends on the device (`stacks_any_net`, a measured rule): MLPs everywhere,
conv, conv_mlp, VAEs and user modules on a GPU, or anywhere with hydra.launcher.stack_conv=true.
A run that cannot be stacked runs alone, as `python -m aelab` runs it. No torch is imported
here.
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
# key -> what each slot of a group keeps of its own (every other key splits groups)
VARY_IN_GROUP = {
    "seed": "its initial weights, batch order and sampling",
    "loss": "its loss (the loss's own code, on its slot's outputs)",
    "init": "its initial weights",
    "l2_penalty": "its penalty (the single run's objective)",
    "optimizer.lr": "its step size (one optimiser built with the largest lr, each slot's "
                    "step scaled: aelab.stacked.loop.LrScale)",
    "normalization": "its data set (loaded once per normalisation, shared by its slots)",
    "allow_out_of_range_targets": "its own check",
    "paths": "its run folder",
    "resume": "its own (a run with a checkpoint continues alone)",
}
STACK_FREE_KEYS = tuple(VARY_IN_GROUP)
# trainer.* keys passed to the group's Trainer, as a single run passes them to its own
GROUP_TRAINER_KEYS = ("max_epochs", "accelerator", "log_every_n_steps", "num_sanity_val_steps",
                      "enable_model_summary", "enable_progress_bar", "limit_train_batches",
                      "limit_val_batches", "limit_test_batches", "check_val_every_n_epoch",
                      "deterministic", "benchmark")
# trainer.* keys the group's module applies, as a single run's module applies them
GROUP_MODULE_KEYS = ("gradient_clip_val", "gradient_clip_algorithm", "accumulate_grad_batches")
# trainer.* keys a group accepts at these values only (a single run's "off")
TRAINER_NEUTRAL = {"devices": (1, "1"), "max_steps": (None, -1),
                   "precision": (None, 32, "32", "32-true")}
LOSSES_WITH_PARAMETERS = ("aelab.losses.GaussianNLL",)
# the callbacks a stacked group runs per slot (the progress bar: one line per group epoch)
CALLBACKS = ("aelab.training.callbacks.ReconstructionGrid",
             "aelab.training.callbacks.LastCheckpoint",
             "aelab.training.callbacks.progress_bar", "aelab.diagnostics.callback.Diagnostics")
# element-wise optimisers whose step is lr x an lr-free update (see stacked_train.LrScale)
OPTIMIZERS = ("torch.optim.Adam", "torch.optim.AdamW", "torch.optim.SGD", "torch.optim.RMSprop",
              "torch.optim.Adadelta")


def why_not_in_a_group(trainer: DictConfig) -> str | None:
    """Why a run's trainer.* settings keep it out of a group (the first key a group does not
    honour), or None."""
    for key, value in trainer.items():
        if key in GROUP_TRAINER_KEYS or key in GROUP_MODULE_KEYS or value is None:
            continue  # honoured, or Lightning's default
        if key in TRAINER_NEUTRAL and value in TRAINER_NEUTRAL[key]:
            continue
        if key in TRAINER_NEUTRAL:
            return f"trainer.{key}={value} (a group takes it at {TRAINER_NEUTRAL[key][-1]} only)"
        return (f"trainer.{key}={value} (a group's Trainer honours trainer."
                f"{', '.join(GROUP_TRAINER_KEYS)})")
    return None


def group_trainer_args(trainer: DictConfig) -> dict[str, Any]:
    """The trainer.* settings of a group's runs that its Trainer takes (GROUP_TRAINER_KEYS)."""
    return {key: trainer[key] for key in GROUP_TRAINER_KEYS if key in trainer}


def run_device(cfg: DictConfig, cuda: bool) -> str:
    """"cuda" or "cpu": where the run trains (trainer.accelerator auto, gpu or cuda: the GPU
    when `cuda`, there is one)."""
    accelerator = str(cfg.trainer.get("accelerator", "auto"))
    return "cuda" if cuda and accelerator in ("auto", "gpu", "cuda") else "cpu"


def stacks_any_net(device: str, stack_conv: bool | None) -> bool:
    """The measured rule: whether a group on `device` stacks nets other than plain MLPs
    (conv, conv_mlp, VAEs, user modules, through torch.func). On a 2-core Xeon (one
    process, 8 seed runs against the same 8 in a row), MLPs stacked by baddbmm train at
    1.97x the throughput, small conv autoencoders by vmap at 0.89x (grouped convolutions lose
    on this CPU): on the CPU only MLPs stack. On a GPU, where one small run leaves the device
    idle, every net does. `stack_conv` (hydra.launcher.stack_conv) true or false forces it."""
    return device == "cuda" if stack_conv is None else bool(stack_conv)


def _not_an_mlp(cfg: DictConfig) -> str | None:
    """What makes the run's net other than a plain MLP (StackedMLP's), or None."""
    for part, target in MLP_PARTS.items():
        found = OmegaConf.select(cfg, f"model.{part}._target_")
        if found != target:
            return f"model.{part} is {found}, not an MLP"
    if cfg.model.get("variational", False):
        return "model.variational=true (a VAE)"
    return None


def why_not_stackable(cfg: DictConfig, device: str = "cpu",
                      stack_conv: bool | None = None) -> str | None:
    """Why this run cannot share a stacked model on `device` (the option to change), or None;
    `stack_conv`: see stacks_any_net."""
    net = _not_an_mlp(cfg)
    if net is None and OmegaConf.select(cfg, "loss._target_") in LOSSES_WITH_PARAMETERS:
        net = f"loss={OmegaConf.select(cfg, 'loss.name') or cfg.loss._target_} trains a " \
              f"parameter of its own (stacked with torch.func)"
    if net is not None and not stacks_any_net(device, stack_conv):
        forced = "hydra.launcher.stack_conv=false" if stack_conv is False else \
            "on the CPU stacking takes model=mlp or seed (measured faster); " \
            "hydra.launcher.stack_conv=true stacks any net"
        return f"{net} ({forced})"
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
    if not isinstance(trainer.get("max_epochs"), int) or trainer.max_epochs < 1:
        return f"trainer.max_epochs={trainer.get('max_epochs')} (stacking needs a number >= 1)"
    return why_not_in_a_group(trainer)


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


def plan_groups(cfgs: Sequence[DictConfig], stack: int, cuda: bool = False,
                stack_conv: bool | None = None) -> Plan:
    """Split the runs into groups of at most `stack` stackable runs with equal group keys,
    in sweep order, as few groups per key as `stack` allows and of balanced sizes (18 runs,
    stack=8: 6, 6, 6); a group of one is still stacked (K = 1). `cuda`: a GPU is there;
    `stack_conv`: see stacks_any_net."""
    check_stack(stack)
    plan, by_key = Plan(), {}
    for i, cfg in enumerate(cfgs):
        why = why_not_stackable(cfg, run_device(cfg, cuda), stack_conv)
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
