"""Any encoder made a Gaussian VAE's (model.variational=true)."""

from __future__ import annotations

import torch
from torch import nn

from aelab.errors import ConfigError
from aelab.models.parts import Part, Stage


class PosteriorMean(nn.Module):
    """The activation of a VariationalEncoder's code stage: [mean | log-variance] -> mean, so
    `trace` and the deterministic path (`encode`, reconstructions) use the posterior mean."""

    def __init__(self, code_dim: int) -> None:
        super().__init__()
        self.code_dim = int(code_dim)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return h[:, : self.code_dim]


def _replace_module(root: nn.Module, old: nn.Module, new: nn.Module) -> nn.Module:
    """`root` with the submodule `old` replaced by `new` (or `new` when root is old)."""
    if root is old:
        return new
    for child in root.modules():
        for key, grandchild in child.named_children():
            if grandchild is old:
                setattr(child, key, new)
                return root
    raise ValueError("module not found")  # pragma: no cover - old comes from root.modules()


class VariationalEncoder(Part):
    """Any encoder Part turned into the encoder of a Gaussian VAE, q(z|x) = N(mu, diag
    exp(logvar)) with z of the encoder's `code_dim`.

    The encoder's code stage keeps its input but its weight layer, which must be a Linear
    (the code layer of MLPEncoder and ConvEncoder), is replaced by a Linear to 2*code_dim
    outputs, the mean and the log-variance, with no activation on them (`PosteriorMean`
    passes the mean on in `trace`). Every other stage is the base encoder's, unchanged, so
    `weight_layers` (and every diagnostic) sees the head as the encoder's last layer.
    """

    def __init__(self, base: Part) -> None:
        *body, code = list(base.stages)
        linear = code.weight_layer
        if not isinstance(linear, nn.Linear):
            raise ConfigError(
                f"model.variational=true needs an encoder whose code layer is a Linear; "
                f"{type(base).__name__}'s is a {type(linear).__name__}."
            )
        head = nn.Linear(linear.in_features, 2 * base.code_dim)
        stage = Stage(_replace_module(code.layer, linear, head), PosteriorMean(base.code_dim))
        super().__init__([*body, stage], base.image_shape, base.code_dim)
        self.base_name = type(base).__name__

    def posterior(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(mu, logvar) of q(z|x), each (N, code_dim)."""
        *body, code = self.stages
        for stage in body:
            x = stage.activation(stage.layer(x))
        h = code.layer(x)
        return h[:, : self.code_dim], h[:, self.code_dim :]
