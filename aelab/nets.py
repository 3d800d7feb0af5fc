"""The autoencoder network: a mirrored MLP, its output activation and initialisations."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from aelab.domains import POSITIVE, REAL, SYMMETRIC, UNIT, Range
from aelab.errors import ConfigError

# output activation name -> (module factory, range of its values)
OUTPUT_ACTIVATIONS: dict[str, tuple[Callable[[], nn.Module], Range]] = {
    "sigmoid": (nn.Sigmoid, UNIT),
    "tanh": (nn.Tanh, SYMMETRIC),
    "identity": (nn.Identity, REAL),
    "relu": (nn.ReLU, POSITIVE),
}


def auto_output_activation(target_range: Range) -> str:
    """The output activation that matches a target range: sigmoid, tanh or identity."""
    return {UNIT: "sigmoid", SYMMETRIC: "tanh"}.get(target_range, "identity")


class MLPAutoencoder(nn.Module):
    """input - hidden... - code - reversed hidden - input, with one activation type inside.

    `hidden=[100, 50]` gives the seed network 784-100-50-100-784. `forward`
    returns the output layer's pre-activation (the logits); `output_activation`
    maps them to a reconstruction.
    """

    def __init__(
        self,
        input_dim: int,
        hidden: list[int],
        activation: Callable[[], nn.Module],
        output_activation: str = "sigmoid",
    ) -> None:
        super().__init__()
        hidden = list(hidden)
        if not hidden or any(int(w) <= 0 for w in hidden):
            raise ConfigError(
                f"model.hidden={hidden} must be a non-empty list of positive widths, e.g. [100,50]."
            )
        if output_activation not in OUTPUT_ACTIVATIONS:
            raise ConfigError(
                f"model.output_activation={output_activation!r} is unknown; choose auto or one of "
                f"{', '.join(OUTPUT_ACTIVATIONS)}."
            )
        widths = [input_dim, *hidden, *reversed(hidden[:-1]), input_dim]
        self.linears = nn.ModuleList(nn.Linear(a, b) for a, b in zip(widths[:-1], widths[1:]))
        self.activations = nn.ModuleList(activation() for _ in self.linears[:-1])
        self.output_activation_name = output_activation
        self.output_activation = OUTPUT_ACTIVATIONS[output_activation][0]()
        self.code_layer = len(hidden) - 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for linear, act in zip(self.linears, self.activations):  # all but the output layer
            x = act(linear(x))
        return self.linears[-1](x)

    def trace(self, x: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Pre-activations and activations of every layer, the output layer last."""
        pre, post = [], []
        for i, linear in enumerate(self.linears):
            z = linear(x)
            act = self.activations[i] if i < len(self.activations) else self.output_activation
            x = act(z)
            pre.append(z)
            post.append(x)
        return pre, post


def init_default(net: nn.Module) -> None:
    """Keep PyTorch's default initialisation (Kaiming-uniform with a=sqrt(5))."""


def init_xavier(net: nn.Module, gain: float = 1.0) -> None:
    """Glorot-uniform weights, zero biases."""
    for m in net.modules():
        if isinstance(m, nn.Linear):
            nn.init.xavier_uniform_(m.weight, gain=gain)
            nn.init.zeros_(m.bias)


def init_kaiming(net: nn.Module, nonlinearity: str = "relu") -> None:
    """He-normal weights (fan-in), zero biases."""
    for m in net.modules():
        if isinstance(m, nn.Linear):
            nn.init.kaiming_normal_(m.weight, nonlinearity=nonlinearity)
            nn.init.zeros_(m.bias)


def init_normal(net: nn.Module, std: float = 1.0, bias: bool = True) -> None:
    """Weights (and biases when `bias`, else zeros) from N(0, std^2), as `tf.random_normal` did."""
    if std <= 0:
        raise ConfigError(f"init.std={std} must be positive.")
    for m in net.modules():
        if isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0.0, std)
            if bias:
                nn.init.normal_(m.bias, 0.0, std)
            else:
                nn.init.zeros_(m.bias)
