"""Any net on the model axis: the runs' parameters stacked with torch.func, each step the
single module's own objective on every slot's parameters in one vmapped call.

PyTorch's model-ensembling recipe: `torch.func.stack_module_state` stacks the members' net
parameters on a leading axis, and `torch.func.vmap` over `torch.func.functional_call` runs
the first member's `Autoencoder.objective_terms` (the single run's objective: loss, VAE
ELBO, KL warm-up, free bits, L2 penalty) with slot j's parameters for slot j. The members
share everything that shapes that function (model, loss, l2_penalty, VAE settings); their
weights (and a loss's own parameters: gaussian_nll's log sigma^2), data and noise are their
own. Conv, conv_mlp, VAEs, user modules and losses with parameters stack so.

A VAE's noise: each single run draws eps ~ N(0, I) from torch's global generator, seeded by
`seed_everything(seed)` before `build`; each slot draws its own from a generator in that
state (aelab.stacked.group captures it after the slot's build), outside vmap, and passes it
in: slot k's z is its single run's, draw for draw.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn
from torch.func import functional_call, stack_module_state, vmap

from aelab.stacked.net import Stack


class _Objective(nn.Module):
    """`module.objective_terms(x, noise=noise)` as a module's forward, for functional_call."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module = module

    def forward(self, x: torch.Tensor, noise: torch.Tensor | None) -> Any:
        return self.module.objective_terms(x, noise=noise)


class FuncStack(Stack):
    """The members' nets (equal but for their weights) as stacked parameters (and buffers)."""

    def __init__(self, members: Sequence[int], modules: Sequence[nn.Module],
                 generators: Sequence[torch.Generator | None]) -> None:
        super().__init__()
        self.members = list(members)
        self.runs = [modules[k] for k in self.members]  # a list: not submodules of the stack
        self.generators = [generators[k] for k in self.members]
        params, buffers = stack_module_state(list(self.runs))  # net and loss parameters
        self.names, self.buffer_names = list(params), list(buffers)
        self.params = nn.ParameterList([nn.Parameter(params[n].detach()) for n in self.names])
        for i, name in enumerate(self.buffer_names):
            self.register_buffer(f"buffer{i}", buffers[name])
        self._objective = [_Objective(self.runs[0])]  # a list: not a submodule
        self._vmapped = vmap(self._one, in_dims=(0, 0, 0, 0), randomness="error")
        self._vmapped_plain = vmap(self._one, in_dims=(0, 0, 0, None), randomness="error")

    def stacked_buffers(self) -> tuple[torch.Tensor, ...]:
        return tuple(getattr(self, f"buffer{i}") for i in range(len(self.buffer_names)))

    def _one(self, params: tuple[torch.Tensor, ...], buffers: tuple[torch.Tensor, ...],
             x: torch.Tensor, noise: torch.Tensor | None) -> Any:
        state = {f"module.{n}": p for n, p in zip(self.names, params)}
        state |= {f"module.{n}": b for n, b in zip(self.buffer_names, buffers)}
        return functional_call(self._objective[0], state, (x, noise))

    def noise(self, x: torch.Tensor) -> torch.Tensor | None:
        """(m, B, code) draws of N(0, I), slot j's from its generator (a VAE), else None."""
        first = self.runs[0]
        if getattr(first, "vae", None) is None:
            return None
        shape = (x.shape[1], first.net.code_dim)
        return torch.stack([torch.randn(shape, generator=g, device=x.device, dtype=x.dtype)
                            for g in self.generators])

    def objectives(self, batches: Sequence[torch.Tensor], active: Sequence[bool]
                   ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Every member's single-run objective_terms in one vmapped call."""
        x = torch.stack([batches[k] for k in self.members])
        noise = self.noise(x)
        fn = self._vmapped if noise is not None else self._vmapped_plain
        return fn(tuple(self.params), self.stacked_buffers(), x, noise)

    def run_parameters(self, run: nn.Module) -> list[nn.Parameter]:
        return [run.get_parameter(name) for name in self.names]

    @torch.no_grad()
    def copy_slot_to(self, j: int, run: nn.Module, grads: bool = False) -> None:
        super().copy_slot_to(j, run, grads)
        for name, buffer in zip(self.buffer_names, self.stacked_buffers()):
            run.get_buffer(name).copy_(buffer[j])

    @torch.no_grad()
    def probe(self, images: torch.Tensor) -> None:
        """One objective on `images` (a few of the data), to refuse a net that cannot be
        vmapped (in-place buffer updates, random ops) before any run folder is written;
        a VAE's noise is zeros here (nothing is drawn from the runs' generators)."""
        first = self.runs[0]
        x = images.expand(self.slots, *images.shape)
        noise = None if getattr(first, "vae", None) is None else images.new_zeros(
            self.slots, len(images), first.net.code_dim)
        fn = self._vmapped if noise is not None else self._vmapped_plain
        fn(tuple(self.params), self.stacked_buffers(), x, noise)
