"""K MLP autoencoders of one shape as one module: weights stacked on a leading model axis.

Layer i holds `weights[i]` (K, in, out) and `biases[i]` (K, 1, out); a forward pass on
(K, B, in) inputs is one `torch.baddbmm` per layer, so K models cost about one call each.
Slot k is built from, and exported back to, the exact state of a single run's
`EncoderDecoder` (`load_slot` / `slot_state`), so a stacked run starts from the single
run's initial weights and its checkpoint is the single run's.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from aelab.models import EncoderDecoder


def _linear_layers(net: EncoderDecoder) -> list[nn.Linear]:
    layers = net.weight_layers()
    if not all(isinstance(layer, nn.Linear) for layer in layers):
        raise TypeError("only a net of Linear layers (model=mlp, seed) can be stacked")
    return layers  # type: ignore[return-value]


def layer_names(net: EncoderDecoder) -> list[str]:
    """The module name of each weight layer in `net` ("encoder.stages.0.layer", ...)."""
    names = {id(module): name for name, module in net.named_modules()}
    return [names[id(layer)] for layer in _linear_layers(net)]


class StackedMLP(nn.Module):
    """The nets of `nets` (MLPs of one shape and one activation) as one batched module."""

    def __init__(self, nets: Sequence[EncoderDecoder]) -> None:
        super().__init__()
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

    @property
    def slots(self) -> int:
        return self.params[0].shape[0]

    @property
    def weights(self) -> list[nn.Parameter]:
        return list(self.params[0::2])

    @property
    def biases(self) -> list[nn.Parameter]:
        return list(self.params[1::2])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits (K, B, out) of inputs (K, B, in): model k sees x[k]."""
        last = len(self.names) - 1
        for i, (w, b) in enumerate(zip(self.weights, self.biases)):
            x = torch.baddbmm(b, x, w)
            if i < last:
                x = self.hidden_activations[i](x)
        return x

    @staticmethod
    def slot_tensor(stacked: torch.Tensor, k: int, weight: bool) -> torch.Tensor:
        """Slot k of a stacked weight (K, in, out) or bias (K, 1, out) tensor (a parameter or
        its optimiser state) in the single layer's layout: (out, in) or (out,)."""
        return stacked[k].t().contiguous() if weight else stacked[k, 0].clone()

    def slot_state(self, k: int) -> dict[str, torch.Tensor]:
        """Slot k as the state_dict of the single run's EncoderDecoder (same keys)."""
        state = {}
        for name, w, b in zip(self.names, self.weights, self.biases):
            state[f"{name}.weight"] = self.slot_tensor(w.detach(), k, True)
            state[f"{name}.bias"] = self.slot_tensor(b.detach(), k, False)
        return state

    @torch.no_grad()
    def copy_slot_to(self, k: int, net: EncoderDecoder, grads: bool = False) -> None:
        """Write slot k's weights (and, with `grads`, its gradients) into a single `net`."""
        for layer, w, b in zip(_linear_layers(net), self.weights, self.biases):
            layer.weight.copy_(w[k].t())
            layer.bias.copy_(b[k, 0])
            if grads:
                layer.weight.grad = None if w.grad is None else w.grad[k].t().clone()
                layer.bias.grad = None if b.grad is None else b.grad[k, 0].clone()

    @torch.no_grad()
    def zero_slot(self, k: int, optimizer: torch.optim.Optimizer | None = None) -> None:
        """Mask slot k: zero its weights, gradients and optimiser state (a diverged model's
        NaNs then never reach a kernel; the other slots are untouched)."""
        for p in self.params:
            p[k].zero_()
            if p.grad is not None:
                p.grad[k].zero_()
            if optimizer is not None:
                for value in optimizer.state.get(p, {}).values():
                    if torch.is_tensor(value) and value.shape == p.shape:
                        value[k].zero_()

    def finite_slots(self) -> torch.Tensor:
        """(K,) bools: slot k's weights are all finite."""
        return torch.stack([p.detach().flatten(1).isfinite().all(1) for p in self.params]).all(0)
