"""What pulls on W1: the data term's gradient against the weight penalty's, and layer names.

At a sampled optimiser step, W1's gradient holds the data term's gradient plus a coupled L2
penalty's, 2 lambda W1 (`l2_penalty`, added to the loss). An optimiser's own coupled
`weight_decay` adds wd * W1 inside its step, not to `.grad`. So

    data    = grad - 2 lambda W1
    penalty = (2 lambda + wd) W1

and ||penalty|| > ||data|| says the penalty outweighs what the data asks of W1 (the doctor's
`penalty` cause). AdamW's decoupled decay is reported the same way (wd * W1), though Adam's
step normalises the data term and not the decay: compare its size with care.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn


def weight_decay(pl_module: Any, optimizer: Any, weight: torch.Tensor) -> float:
    """The weight_decay applied to `weight`: its param group's in `optimizer`, else (a stacked
    slot, no optimizer object) the module's optimiser factory's (a functools.partial)."""
    groups = getattr(optimizer, "param_groups", None)
    if groups:
        for group in groups:
            if any(p is weight for p in group["params"]):
                return float(group.get("weight_decay", 0.0) or 0.0)
        return 0.0
    factory = getattr(pl_module, "optimizer_factory", None)
    return float((getattr(factory, "keywords", None) or {}).get("weight_decay", 0.0) or 0.0)


def split_norms(pl_module: Any, optimizer: Any, layer: nn.Module) -> torch.Tensor | None:
    """(||data gradient||, ||penalty gradient||) at `layer`'s weight, a (2,) tensor on its
    device (no host sync), or None when it has no gradient."""
    weight = layer.weight
    if weight.grad is None:
        return None
    l2 = float(getattr(pl_module, "l2_penalty", 0.0) or 0.0)
    wd = weight_decay(pl_module, optimizer, weight)
    w = weight.detach()
    return row_split_norms(weight.grad.detach().view(1, -1), w.view(1, -1),
                           w.new_tensor([l2]), w.new_tensor([wd]))[0]


def row_split_norms(grad: torch.Tensor, weight: torch.Tensor, l2: torch.Tensor,
                    wd: torch.Tensor) -> torch.Tensor:
    """(data, penalty) gradient norms, (m, 2), of m models' flat W1 gradients and weights
    (m, n) with penalties l2 and decays wd (m,): data = grad - 2 l2 W1, penalty =
    (2 l2 + wd) W1 (a stacked group measures all its runs in one call)."""
    data = torch.linalg.vector_norm(grad - (2 * l2)[:, None] * weight, dim=1)
    penalty = (2 * l2 + wd).abs() * torch.linalg.vector_norm(weight, dim=1)
    return torch.stack([data, penalty], 1)


def layer_names(net: nn.Module) -> dict[str, str]:
    """h<i> -> "<module path> (<class>)" of each hidden activation (net.activations() but the
    output's), and "out" for the output activation: the names the doctor reports."""
    where = {id(m): name for name, m in net.named_modules()}
    acts = list(net.activations())
    names = {}
    for i, act in enumerate(acts, start=1):
        key = "out" if i == len(acts) else f"h{i}"
        names[key] = f"{where.get(id(act), key)} ({type(act).__name__})"
    return names
