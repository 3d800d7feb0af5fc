"""The runs of a stacked group as stacked parameters: a leading model axis, one slot per run.

`Stack` is what the group's LightningModule (aelab.stacked.loop) asks of one: the runs it
trains (`members`, slots of the group), their objectives on a step's batches, and each
slot's weights, gradients and optimiser state in its single run's layout. Two kinds:

- `StackedMLP` (here): MLPs of one shape, a hand-written `torch.baddbmm` per layer; each
  slot's objective is its single module's (`Autoencoder.reconstruction_objective`) on its
  slice of the batched output, or, when every slot has the same loss and that loss scores
  each image alone (`rows_alone`), the same objective from one call of the loss on all
  slots' rows, reduced per slot (the same gradients; the values to float rounding).
- `aelab.stacked.func.FuncStack`: any net (conv, conv_mlp, VAEs, user modules) through
  torch.func (`stack_module_state`, `functional_call`, `vmap`), running the single module's
  whole `objective_terms` on every slot's parameters at once.

The baddbmm path stays where it is faster: 8 seed MLPs (784-100-50, batch 128, 2-core Xeon,
one process) train at 1.97x the throughput of 8 runs in a row stacked by baddbmm, 1.21x by
vmap (measured). Slot k is built from, and exported back to, the exact state of a single
run's `EncoderDecoder`, so a stacked run starts from its single run's initial weights and
its checkpoint is its single run's.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from aelab.diagnostics.gradients import row_split_norms, weight_decay
from aelab.losses.reconstruction import ReconstructionLoss, reduce
from aelab.models import EncoderDecoder


class Stack(nn.Module):
    """Stacked parameters (`params`, slot j at index j of each) of the group slots `members`."""

    members: list[int]
    runs: list[nn.Module]  # the members' single-run modules (not submodules of the stack)
    params: nn.ParameterList

    @property
    def slots(self) -> int:
        return len(self.members)

    def objectives(self, batches: Sequence[torch.Tensor], active: Sequence[bool]
                   ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """(objective (m,), detached training metrics {name: (m,)}) of the members on their
        batches (`batches[k]`: group slot k's); a masked slot's values are not used."""
        raise NotImplementedError

    def slot_tensor(self, index: int, stacked: torch.Tensor, j: int) -> torch.Tensor:
        """Slot j of `params[index]`'s shape (the parameter or its optimiser state), in the
        single net's layout."""
        return stacked[j].clone()

    def run_parameters(self, run: nn.Module) -> list[nn.Parameter]:
        """The single run's module's parameters that `params` hold, in the same order."""
        raise NotImplementedError

    @torch.no_grad()
    def copy_slot_to(self, j: int, run: nn.Module, grads: bool = False) -> None:
        """Write slot j's weights (and, with `grads`, its gradients) into a single run's
        module `run` (its net; a FuncStack's loss parameters too)."""
        for i, (mine, theirs) in enumerate(zip(self.params, self.run_parameters(run))):
            theirs.copy_(self.slot_tensor(i, mine, j))
            if grads:
                theirs.grad = None if mine.grad is None else self.slot_tensor(i, mine.grad, j)

    @torch.no_grad()
    def zero_slot(self, j: int, optimizer: torch.optim.Optimizer | None = None) -> None:
        """Mask slot j: zero its weights, gradients and optimiser state (a diverged model's
        NaNs then never reach a kernel; the other slots are untouched)."""
        for p in self.params:
            p[j].zero_()
            if p.grad is not None:
                p.grad[j].zero_()
            if optimizer is not None:
                for value in optimizer.state.get(p, {}).values():
                    if torch.is_tensor(value) and value.shape == p.shape:
                        value[j].zero_()

    @torch.no_grad()
    def clip_gradients(self, value: float, algorithm: str = "norm") -> None:
        """Each slot's gradients clipped as its single run clips them (Lightning's
        clip_gradients: torch's clip_grad_norm_ over all its parameters, or clip_grad_value_)."""
        grads = [p.grad for p in self.params if p.grad is not None]
        if not grads:
            return
        if algorithm == "value":
            for g in grads:
                g.clamp_(-value, value)
            return
        norms = torch.stack([torch.linalg.vector_norm(g.flatten(1), dim=1) for g in grads])
        coef = (value / (torch.linalg.vector_norm(norms, dim=0) + 1e-6)).clamp(max=1.0)
        for g in grads:
            g.mul_(coef.view(-1, *[1] * (g.dim() - 1)))

    def weight_params(self) -> list[nn.Parameter]:
        """The stacked weights of the members' weight layers (`net.weight_layers()`), in order."""
        run = self.runs[0]
        index = {id(p): i for i, p in enumerate(self.run_parameters(run))}
        return [self.params[index[id(layer.weight)]] for layer in run.net.weight_layers()]

    @torch.no_grad()
    def gradient_sample(self) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]] | None:
        """Every slot's Diagnostics gradient sample at once (what its single run's hook
        measures, aelab.diagnostics.gradients): (||dL/dW<i>|| (m, layers), the data term's and
        the weight penalty's gradient norms at W1 (m, 2), the weights before the step); None
        before the first backward pass. One pass over the stacks instead of m copies."""
        weights = self.weight_params()
        grads = [w.grad for w in weights]
        if any(g is None for g in grads):
            return None
        norms = torch.stack([torch.linalg.vector_norm(g.flatten(1), dim=1) for g in grads], 1)
        w1, g1 = weights[0].detach().flatten(1), grads[0].flatten(1)
        l2 = w1.new_tensor([float(run.l2_penalty or 0.0) for run in self.runs])
        wd = w1.new_tensor([weight_decay(run, None, None) for run in self.runs])
        split = row_split_norms(g1, w1, l2, wd)
        return norms, split, [w.detach().clone() for w in weights]

    @torch.no_grad()
    def update_ratios(self, before: list[torch.Tensor]) -> torch.Tensor:
        """Every slot's realised update ratios ||W_t - W_{t-1}|| / ||W_{t-1}|| (m, layers),
        from the weights `before` the step (gradient_sample's)."""
        return torch.stack([
            torch.linalg.vector_norm((w.detach() - old).flatten(1), dim=1)
            / torch.linalg.vector_norm(old.flatten(1), dim=1)
            for w, old in zip(self.weight_params(), before)], 1)

    def finite_slots(self) -> torch.Tensor:
        """(m,) bools: slot j's weights are all finite."""
        return torch.stack([p.detach().flatten(1).isfinite().all(1) for p in self.params]).all(0)


def _linear_layers(net: EncoderDecoder) -> list[nn.Linear]:
    layers = net.weight_layers()
    if not all(isinstance(layer, nn.Linear) for layer in layers):
        raise TypeError("only a net of Linear layers (model=mlp, seed) can be stacked")
    return layers  # type: ignore[return-value]


def is_mlp(net: nn.Module) -> bool:
    """A net that StackedMLP takes: Linear weight layers that are all its parameters, no VAE."""
    layers = getattr(net, "weight_layers", lambda: [])()
    return (bool(layers) and all(isinstance(layer, nn.Linear) for layer in layers)
            and not getattr(net, "variational", False)
            and sum(1 for _ in net.parameters()) == 2 * len(layers))


def layer_names(net: EncoderDecoder) -> list[str]:
    """The module name of each weight layer in `net` ("encoder.stages.0.layer", ...)."""
    names = {id(module): name for name, module in net.named_modules()}
    return [names[id(layer)] for layer in _linear_layers(net)]


class StackedMLP(Stack):
    """The nets of `modules`' `members` (MLPs of one shape and one activation) as one batched
    module: layer i holds `weights[i]` (K, in, out) and `biases[i]` (K, 1, out)."""

    def __init__(self, members: Sequence[int], modules: Sequence[nn.Module],
                 one_loss: bool = False) -> None:
        super().__init__()
        self.members = list(members)
        self.runs = [modules[k] for k in self.members]  # a list: not submodules of the stack
        nets = [run.net for run in self.runs]
        first = nets[0]
        shapes = [tuple(layer.weight.shape) for layer in _linear_layers(first)]
        for net in nets[1:]:
            if [tuple(layer.weight.shape) for layer in _linear_layers(net)] != shapes:
                raise ValueError("stacked nets must have the same layer shapes")
        self.names = layer_names(first)
        self.hidden_activations = nn.ModuleList(first.activations()[:-1])
        self.output_activation = first.output_activation
        params: list[nn.Parameter] = []  # weight, bias per layer: the single net's order
        for i in range(len(shapes)):
            layers = [_linear_layers(net)[i] for net in nets]
            params.append(nn.Parameter(torch.stack(
                [layer.weight.detach().t() for layer in layers]).contiguous()))
            params.append(nn.Parameter(torch.stack(
                [layer.bias.detach() for layer in layers]).unsqueeze(1).contiguous()))
        self.params = nn.ParameterList(params)
        # one loss call on the whole stack where the members' losses are one config and the
        # loss scores each image alone (K per-slot calls: ~0.5 ms of a 10 ms step at K=8)
        loss = self.runs[0].loss_fn
        self.one_loss = one_loss and type(loss).reduce is ReconstructionLoss.reduce and (
            rows_alone(loss, shapes[-1][0]))

        self._cache_layers()

    def _cache_layers(self) -> None:
        """Plain lists of the layers' tensors: indexing a ParameterList or ModuleList every
        step cost ~0.2 ms of a K=8 step (cProfile, measured)."""
        params = list(self.params)
        self.weights: list[nn.Parameter] = params[0::2]
        self.biases: list[nn.Parameter] = params[1::2]
        self._acts = [*self.hidden_activations, None]

    def _apply(self, fn: Any, recurse: bool = True) -> StackedMLP:
        """Module.to/cuda/float, then the cached lists of the (possibly new) parameters."""
        super()._apply(fn, recurse)
        self._cache_layers()
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits (K, B, out) of inputs (K, B, in): model k sees x[k]."""
        for w, b, act in zip(self.weights, self.biases, self._acts):
            x = torch.baddbmm(b, x, w)
            if act is not None:
                x = act(x)
        return x

    def objectives(self, batches: Sequence[torch.Tensor], active: Sequence[bool]
                   ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """One batched forward pass, then each member's single-run objective on its slice."""
        x = torch.stack([batches[k] for k in self.members])
        logits = self(x)
        recon = self.output_activation(logits)
        on = [active[k] for k in self.members]
        squares = torch.stack([w.square().sum((1, 2)) for w in self.weights]).sum(0) if any(
            run.l2_penalty and a for run, a in zip(self.runs, on)) else None  # (K,) in one pass
        if self.one_loss:
            return self._one_loss_objectives(x, logits, recon, squares, on)
        # unbind, not logits[k]: indexing's backward writes a zero (K, B, pixels) gradient per
        # slot (K^2 memory traffic: 26 against 17 ms a step at K=8, measured); the
        # gradients are the same to the bit
        logit_k, recon_k, x_k = logits.unbind(0), recon.unbind(0), x.unbind(0)
        objectives, metrics = [], []
        for j, run in enumerate(self.runs):
            if not on[j]:
                objectives.append(None)
                metrics.append(None)
                continue
            objective, values = run.reconstruction_objective(
                x_k[j], logit_k[j], recon_k[j], None if squares is None else squares[j])
            objectives.append(objective)
            metrics.append(values)
        return stack_values(objectives, metrics, x.new_zeros(()))

    def _one_loss_objectives(self, x: torch.Tensor, logits: torch.Tensor, recon: torch.Tensor,
                             squares: torch.Tensor | None, on: list[bool]
                             ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Every member's objective (Autoencoder.reconstruction_objective's) from one call of
        the shared loss on the (K * B, pixels) rows, reduced per slot."""
        loss = self.runs[0].loss_fn
        per_pixel = loss.per_pixel(logits.flatten(0, 1), recon.flatten(0, 1),
                                   x.flatten(0, 1)).view_as(x)
        objective = reduce(per_pixel, loss.reduction, model_axis=True)
        mean = objective.detach() if loss.reduction == "mean" else per_pixel.detach().mean((1, 2))
        if squares is not None:
            objective = objective + x.new_tensor([run.l2_penalty for run in self.runs]) * squares
        if not all(on):
            keep = torch.tensor(on, device=x.device)
            objective, mean = objective.where(keep, 0.0), mean.where(keep, 0.0)
        return objective, {"train/loss": mean}

    def slot_tensor(self, index: int, stacked: torch.Tensor, j: int) -> torch.Tensor:
        """A weight (K, in, out) or bias (K, 1, out) tensor's slot j as (out, in) or (out,)."""
        return stacked[j].t().contiguous() if index % 2 == 0 else stacked[j, 0].clone()

    def run_parameters(self, run: nn.Module) -> list[nn.Parameter]:
        return [p for layer in _linear_layers(run.net) for p in (layer.weight, layer.bias)]


def rows_alone(loss: nn.Module, pixels: int) -> bool:
    """Whether `loss.per_pixel` scores each row (image) on its own: on 6 random rows, the
    same values, to the bit, in one call as in calls of 3 (a loss with batch statistics fails)."""
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(6, pixels, generator=g)
    target = torch.rand(6, pixels, generator=g)
    recon = torch.sigmoid(logits)
    with torch.no_grad():
        whole = loss.per_pixel(logits, recon, target)
        parts = [loss.per_pixel(logits[i:i + 3], recon[i:i + 3], target[i:i + 3]) for i in (0, 3)]
    return whole.shape == target.shape and torch.allclose(
        whole, torch.cat(parts), rtol=0.0, atol=0.0, equal_nan=True)


def stack_values(objectives: list[torch.Tensor | None],
                 metrics: list[dict[str, torch.Tensor] | None],
                 zero: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Per-slot objectives and metric dicts as (m,) tensors, zeros where a slot is masked."""
    keys = next((list(m) for m in metrics if m is not None), ["train/loss"])
    stacked = torch.stack([zero if o is None else o for o in objectives])
    return stacked, {key: torch.stack([zero if m is None else m[key] for m in metrics])
                     for key in keys}
