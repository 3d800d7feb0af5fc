"""An encoder and a decoder paired: the autoencoder that training, diagnostics and init see.

`EncoderDecoder.forward` returns the output layer's pre-activation (the logits);
`output_activation` maps them to a reconstruction.
"""

from __future__ import annotations

import torch
from torch import nn

from aelab.errors import ConfigError
from aelab.models.parts import OUTPUT_ACTIVATIONS, Part, Shape, Stage
from aelab.models.variational import VariationalEncoder


class EncoderDecoder(nn.Module):
    """An encoder and a decoder whose code sizes match, and the output activation.

    With a `VariationalEncoder` the net is a VAE (`variational`): `posterior` gives q(z|x),
    `decode` takes a sampled z, and `encode`/`forward` use the posterior mean.
    """

    def __init__(self, encoder: Part, decoder: Part, output_activation: str = "sigmoid") -> None:
        super().__init__()
        if encoder.code_dim != decoder.code_dim:
            raise ConfigError(
                f"the encoder outputs a code of {encoder.code_dim} but the decoder takes "
                f"{decoder.code_dim}; make model.encoder and model.decoder agree (model.code_dim, "
                f"or the last of model.hidden)."
            )
        if encoder.image_shape != decoder.image_shape:
            raise ConfigError(f"the encoder takes {encoder.image_shape} images but the decoder "
                              f"makes {decoder.image_shape}.")
        if output_activation not in OUTPUT_ACTIVATIONS:
            raise ConfigError(
                f"model.output_activation={output_activation!r} is unknown; choose auto or one "
                f"of {', '.join(OUTPUT_ACTIVATIONS)}."
            )
        self.encoder, self.decoder = encoder, decoder
        self.output_activation_name = output_activation
        self.output_activation = OUTPUT_ACTIVATIONS[output_activation][0]()
        self.code_layer = len(encoder.stages) - 1  # the code's index in `trace`

    @property
    def image_shape(self) -> Shape:
        return self.encoder.image_shape

    @property
    def variational(self) -> bool:
        return isinstance(self.encoder, VariationalEncoder)

    @property
    def code_dim(self) -> int:
        return self.encoder.code_dim

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """The code: the encoder's output (a VAE's posterior mean)."""
        return self.encoder(x)

    def posterior(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(mu, logvar) of a VAE's q(z|x); only when `variational`."""
        if not isinstance(self.encoder, VariationalEncoder):
            raise TypeError("posterior() needs a VariationalEncoder (model.variational=true)")
        return self.encoder.posterior(x)

    def decode(self, code: torch.Tensor) -> torch.Tensor:
        """The logits of every pixel, flat (N, C*H*W)."""
        return self.decoder(code)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.encoder(x))

    @property
    def stages(self) -> list[Stage]:
        return [*self.encoder.stages, *self.decoder.stages]

    def weight_layers(self) -> list[nn.Module]:
        """Every Linear/Conv2d/ConvTranspose2d in forward order: "W1" is the first."""
        return [stage.weight_layer for stage in self.stages]

    def activations(self) -> list[nn.Module]:
        """The activation after each stage, the output activation last."""
        return [s.activation for s in self.stages[:-1]] + [self.output_activation]

    def trace(self, x: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Pre-activations and activations of every stage, the output stage last
        ((N, C, H, W) for conv stages, (N, units) for linear ones)."""
        pre, post = [], []
        for stage, act in zip(self.stages, self.activations()):
            z = stage.layer(x)
            x = act(z)
            pre.append(z)
            post.append(x)
        return pre, post

    def first_layer_filters(self) -> torch.Tensor:
        """The first layer's weights as images (units, C, h, w): an MLP unit's incoming
        weights over the image, or a conv kernel."""
        layer = self.weight_layers()[0]
        w = layer.weight.detach()
        if isinstance(layer, nn.Linear):
            return w.view(w.shape[0], *self.image_shape)
        return w
