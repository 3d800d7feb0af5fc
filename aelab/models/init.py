"""Weight initialisations (the init group): each a function of the net, run once after building."""

from __future__ import annotations

from torch import nn

from aelab.errors import ConfigError
from aelab.models.parts import WEIGHT_LAYERS


def init_default(net: nn.Module) -> None:
    """Keep PyTorch's default initialisation (Kaiming-uniform with a=sqrt(5))."""


def _weight_layers(net: nn.Module) -> list[nn.Module]:
    return [m for m in net.modules() if isinstance(m, WEIGHT_LAYERS)]


def init_xavier(net: nn.Module, gain: float = 1.0) -> None:
    """Glorot-uniform weights, zero biases (linear and conv layers)."""
    for m in _weight_layers(net):
        nn.init.xavier_uniform_(m.weight, gain=gain)
        nn.init.zeros_(m.bias)


def init_kaiming(net: nn.Module, nonlinearity: str = "relu") -> None:
    """He-normal weights (fan-in), zero biases (linear and conv layers)."""
    for m in _weight_layers(net):
        nn.init.kaiming_normal_(m.weight, nonlinearity=nonlinearity)
        nn.init.zeros_(m.bias)


def init_normal(net: nn.Module, std: float = 1.0, bias: bool = True) -> None:
    """Weights (and biases when `bias`, else zeros) from N(0, std^2), as `tf.random_normal` did."""
    if std <= 0:
        raise ConfigError(f"init.std={std} must be positive.")
    for m in _weight_layers(net):
        nn.init.normal_(m.weight, 0.0, std)
        if bias:
            nn.init.normal_(m.bias, 0.0, std)
        else:
            nn.init.zeros_(m.bias)
