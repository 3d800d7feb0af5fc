"""The autoencoder's networks: an encoder and a decoder as separate parts, MLP or convolutional.

Every part is a list of `Stage`s (a weight layer, with any reshape or pooling it needs, then
an activation), so the code that works on "the model" (diagnostics, init, the L2 penalty, the
filter image) asks the parts for their stages and weight layers instead of assuming an MLP.
Networks see and return flat images (N, C*H*W), the layout the data, losses and metrics use;
a conv part views them as (N, C, H, W) inside. `EncoderDecoder.forward` returns the output
layer's pre-activation (the logits); `output_activation` maps them to a reconstruction.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

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
WEIGHT_LAYERS = (nn.Linear, nn.Conv2d, nn.ConvTranspose2d)
DOWNSAMPLING = ("stride", "pool")

Shape = tuple[int, int, int]  # (channels, height, width)


def auto_output_activation(target_range: Range) -> str:
    """The output activation that matches a target range: sigmoid, tanh or identity."""
    return {UNIT: "sigmoid", SYMMETRIC: "tanh"}.get(target_range, "identity")


def unit_rows(weight: torch.Tensor, layer: nn.Module) -> torch.Tensor:
    """`weight` of `layer` as (units, fan-in): row i holds the incoming weights of unit i
    (an output feature, or an output channel's kernel over all input channels)."""
    if isinstance(layer, nn.ConvTranspose2d):  # stored (in, out, kh, kw)
        weight = weight.transpose(0, 1)
    return weight.flatten(1)


class Stage(nn.Module):
    """One weight layer (with its reshape/pooling) and the activation after it (None: the
    network's output stage, whose activation the EncoderDecoder owns)."""

    def __init__(self, layer: nn.Module, activation: nn.Module | None) -> None:
        super().__init__()
        self.layer, self.activation = layer, activation

    @property
    def weight_layer(self) -> nn.Module:
        return next(m for m in self.layer.modules() if isinstance(m, WEIGHT_LAYERS))


class Part(nn.Module):
    """An encoder or a decoder: stages run in order. `code_dim` is the size of the code it
    outputs (an encoder) or takes (a decoder); `image_shape` the (C, H, W) of the images."""

    code_dim: int
    image_shape: Shape

    def __init__(self, stages: Sequence[Stage], image_shape: Sequence[int], code_dim: int) -> None:
        super().__init__()
        self.stages = nn.ModuleList(stages)
        self.image_shape = tuple(int(s) for s in image_shape)  # type: ignore[assignment]
        self.code_dim = int(code_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for stage in self.stages:
            x = stage.layer(x)
            if stage.activation is not None:
                x = stage.activation(x)
        return x


def _positive_ints(name: str, values: Sequence[int] | int, example: str) -> list[int]:
    listed = list(values) if not isinstance(values, (int, str)) else None
    if not listed or any(not isinstance(v, int) or isinstance(v, bool) or v <= 0 for v in listed):
        raise ConfigError(f"model.{name}={listed if listed is not None else values} must be a "
                          f"non-empty list of positive integers, e.g. model.{name}={example}.")
    return listed


def _pixels(image_shape: Sequence[int]) -> int:
    return math.prod(int(s) for s in image_shape)


class MLPEncoder(Part):
    """pixels -> hidden[0] -> ... -> hidden[-1] (the code), the activation after every layer."""

    def __init__(self, image_shape: Sequence[int], activation: Callable[[], nn.Module],
                 hidden: Sequence[int]) -> None:
        hidden = _positive_ints("hidden", hidden, "[100,50]")
        widths = [_pixels(image_shape), *hidden]
        stages = [Stage(nn.Linear(a, b), activation()) for a, b in zip(widths[:-1], widths[1:])]
        super().__init__(stages, image_shape, hidden[-1])


class MLPDecoder(Part):
    """The mirror of MLPEncoder(hidden): hidden[-1] (the code) -> ... -> hidden[0] -> pixels."""

    def __init__(self, image_shape: Sequence[int], activation: Callable[[], nn.Module],
                 hidden: Sequence[int]) -> None:
        hidden = _positive_ints("hidden", hidden, "[100,50]")
        widths = [*reversed(hidden), _pixels(image_shape)]
        stages = [Stage(nn.Linear(a, b), activation()) for a, b in zip(widths[:-2], widths[1:-1])]
        stages.append(Stage(nn.Linear(widths[-2], widths[-1]), None))
        super().__init__(stages, image_shape, hidden[-1])


def _check_conv(image_shape: Sequence[int], channels: list[int], kernel: int, downsample: str,
                code_dim: int) -> list[tuple[int, int]]:
    """The (H, W) after each encoder stage; refuse settings that cannot work, naming them."""
    if len(image_shape) != 3:
        raise ConfigError(f"model=conv needs images of shape (C, H, W); got {tuple(image_shape)}.")
    if not (isinstance(kernel, int) and kernel >= 1):
        raise ConfigError(f"model.kernel={kernel} must be a positive integer, e.g. 3.")
    if downsample not in DOWNSAMPLING:
        raise ConfigError(f"model.downsample={downsample!r} is unknown; choose stride or pool.")
    if not (isinstance(code_dim, int) and code_dim >= 1):
        raise ConfigError(f"model.code_dim={code_dim} must be a positive integer, e.g. 32.")
    sizes, (h, w) = [], (int(image_shape[1]), int(image_shape[2]))
    shrink = 2 * ((kernel - 1) // 2) - kernel  # a stride-2 conv with padding (kernel - 1) // 2
    for i, _ in enumerate(channels):
        if h < 2 or w < 2:
            raise ConfigError(
                f"model.channels={channels} halves {tuple(image_shape[1:])} images "
                f"{len(channels)} times, but they are {h}x{w} after {i}; use fewer stages "
                f"or a larger data.size."
            )
        if downsample == "stride":
            h, w = (h + shrink) // 2 + 1, (w + shrink) // 2 + 1
        else:
            h, w = h // 2, w // 2
        sizes.append((h, w))
    return sizes


class ConvEncoder(Part):
    """Conv stages that halve the image (stride 2, or stride 1 then 2x2 max pooling), each
    followed by the activation, then a linear layer to a flat code of `code_dim` (activated,
    like the MLP's code)."""

    def __init__(self, image_shape: Sequence[int], activation: Callable[[], nn.Module],
                 channels: Sequence[int] = (32, 64), kernel: int = 3, downsample: str = "stride",
                 code_dim: int = 32) -> None:
        channels = _positive_ints("channels", channels, "[32,64]")
        sizes = _check_conv(image_shape, channels, kernel, downsample, code_dim)
        stages, c_in = [], int(image_shape[0])
        for i, c in enumerate(channels):
            if downsample == "stride":
                conv: nn.Module = nn.Conv2d(c_in, c, kernel, stride=2, padding=(kernel - 1) // 2)
            else:
                conv = nn.Sequential(nn.Conv2d(c_in, c, kernel, padding="same"), nn.MaxPool2d(2))
            layer = nn.Sequential(nn.Unflatten(1, tuple(image_shape)), conv) if i == 0 else conv
            stages.append(Stage(layer, activation()))
            c_in = c
        h, w = sizes[-1]
        code = nn.Sequential(nn.Flatten(1), nn.Linear(c_in * h * w, code_dim))
        stages.append(Stage(code, activation()))
        super().__init__(stages, image_shape, code_dim)


class ConvDecoder(Part):
    """The mirror of ConvEncoder: a linear layer from the code to the last stage's feature
    maps, then transposed convs (or 2x nearest upsampling + conv, for `downsample=pool`)
    back to the input size, the last one giving the logits of every pixel."""

    def __init__(self, image_shape: Sequence[int], activation: Callable[[], nn.Module],
                 channels: Sequence[int] = (32, 64), kernel: int = 3, downsample: str = "stride",
                 code_dim: int = 32) -> None:
        channels = _positive_ints("channels", channels, "[32,64]")
        sizes = _check_conv(image_shape, channels, kernel, downsample, code_dim)
        targets = [(int(image_shape[1]), int(image_shape[2])), *sizes[:-1]]  # each stage's output
        outs = [int(image_shape[0]), *channels[:-1]]
        h, w = sizes[-1]
        stages = [Stage(nn.Linear(code_dim, channels[-1] * h * w), activation())]
        c_in, shape_in = channels[-1], (channels[-1], h, w)
        for i in reversed(range(len(channels))):
            (th, tw), c = targets[i], outs[i]
            if downsample == "stride":
                pad = (kernel - 1) // 2
                grown = (h - 1) * 2 - 2 * pad + kernel, (w - 1) * 2 - 2 * pad + kernel
                extra = (th - grown[0], tw - grown[1])  # in [0, 2) for this encoder's sizes
                conv: nn.Module = nn.ConvTranspose2d(c_in, c, kernel, stride=2, padding=pad,
                                                     output_padding=extra)
            else:
                conv = nn.Sequential(nn.Upsample(size=(th, tw), mode="nearest"),
                                     nn.Conv2d(c_in, c, kernel, padding="same"))
            parts = [nn.Unflatten(1, shape_in), conv] if i == len(channels) - 1 else [conv]
            last = i == 0
            if last:
                parts.append(nn.Flatten(1))
            stages.append(Stage(nn.Sequential(*parts) if len(parts) > 1 else conv,
                                None if last else activation()))
            c_in, (h, w) = c, (th, tw)
        super().__init__(stages, image_shape, code_dim)


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


def mlp_autoencoder(image_shape: Sequence[int], hidden: Sequence[int],
                    activation: Callable[[], nn.Module],
                    output_activation: str = "sigmoid") -> EncoderDecoder:
    """The mirrored MLP; `hidden=[100, 50]` on (1, 28, 28) is the seed net 784-100-50-100-784."""
    return EncoderDecoder(MLPEncoder(image_shape, activation, hidden),
                          MLPDecoder(image_shape, activation, hidden), output_activation)


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
