"""Any autoencoder is a part: a user's plain `nn.Module` encoder and decoder on images.

`ModuleAutoencoder(encoder, decoder, image_shape)` gives two modules that take and return
images (N, C, H, W) the interface the rest of aelab uses (that of `EncoderDecoder`): flat
(N, C*H*W) images in, logits out; `weight_layers()` (every Linear/Conv2d/ConvTranspose2d in
the order the forward pass first calls it, found with forward hooks); `activations()` and
`trace()` (each call of an activation module, sigmoid, tanh or ReLU-like, found with forward
hooks; the code, the encoder's output, as a stage of its own when no activation made it);
`code_layer`, `code_dim`, `first_layer_filters()`.

The output: when the decoder's last step is an activation module (e.g. `nn.Sigmoid()`), its
input is the logits and the module is the output activation, so BCE is computed from the
logits as for aelab's own nets; otherwise the decoder's output is the logits and
`output_activation` (a name, as model.output_activation) is applied to it.

`build_custom` makes them from config (model=custom): each part's `_target_` is given only
the arguments its signature takes, of image_shape, code_dim, activation and in_channels.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from aelab.errors import ConfigError
from aelab.models.parts import OUTPUT_ACTIVATIONS, WEIGHT_LAYERS

ACTIVATION_TYPES = (nn.Sigmoid, nn.Tanh, nn.ReLU, nn.LeakyReLU, nn.ELU, nn.GELU, nn.SiLU,
                    nn.CELU, nn.SELU, nn.ReLU6, nn.Softplus, nn.PReLU, nn.Hardtanh, nn.Mish)
OFFERED = ("image_shape", "code_dim", "activation", "in_channels")


def _kind(module: nn.Module | None) -> str:
    """The output activation name of an activation module (sigmoid, tanh, relu, identity)."""
    for name, (factory, _) in OUTPUT_ACTIVATIONS.items():
        if module is not None and type(module) is type(factory()):
            return name
    return "other"


class _Calls:
    """Forward hooks that record (module, input, output) of every activation call in order."""

    def __init__(self, roots: Sequence[nn.Module], types: tuple[type, ...]) -> None:
        self.calls: list[tuple[nn.Module, torch.Tensor, torch.Tensor]] = []
        self.handles = [m.register_forward_hook(self._hook) for root in roots
                        for m in root.modules() if isinstance(m, types)]

    def _hook(self, module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
        self.calls.append((module, inputs[0], output))

    def __enter__(self) -> _Calls:
        return self

    def __exit__(self, *exc: Any) -> None:
        for handle in self.handles:
            handle.remove()


class ModuleAutoencoder(nn.Module):
    """A plain encoder and decoder on (N, C, H, W) images as an aelab net (module docstring)."""

    variational = False

    def __init__(self, encoder: nn.Module, decoder: nn.Module, image_shape: Sequence[int],
                 output_activation: str = "identity") -> None:
        super().__init__()
        self.encoder, self.decoder = encoder, decoder
        self.image_shape = tuple(int(s) for s in image_shape)
        self.code_stage = nn.Identity()  # the code's stage when no activation module made it
        was = [m.training for m in (encoder, decoder)]
        encoder.eval(), decoder.eval()
        probe = torch.rand(2, *self.image_shape,
                           device=next(iter(encoder.parameters()), torch.zeros(())).device)
        with torch.no_grad():
            with _Calls([encoder, decoder], WEIGHT_LAYERS) as weights, \
                    _Calls([encoder], ACTIVATION_TYPES) as enc:
                code = encoder(probe)
            with _Calls([decoder], WEIGHT_LAYERS + ACTIVATION_TYPES) as dec:
                out = decoder(code)
        encoder.train(was[0]), decoder.train(was[1])
        if not torch.is_tensor(code) or not torch.is_tensor(out):
            raise ConfigError("model=custom: the encoder and the decoder must each return one "
                              "tensor (the code; the image (N, C, H, W)).")
        if out[0].numel() != code.new_zeros(self.image_shape).numel():
            raise ConfigError(f"model=custom: the decoder returns {tuple(out.shape[1:])} images "
                              f"but the data's are {self.image_shape}.")
        found = [m for m, _, _ in weights.calls] + [m for m, _, _ in dec.calls
                                                    if isinstance(m, WEIGHT_LAYERS)]
        self._weight_layers = list(dict.fromkeys(found))  # first call order, no repeats
        if not self._weight_layers:
            raise ConfigError("model=custom: no Linear, Conv2d or ConvTranspose2d layer runs in "
                              "the encoder or decoder; aelab's diagnostics need one.")
        self.code_shape = tuple(code.shape[1:])
        self.code_dim = int(code[0].numel())
        enc_acts = [m for m, _, _ in enc.calls]
        self._code_is_act = bool(enc.calls) and enc.calls[-1][2] is code
        dec_acts = [(m, o) for m, _, o in dec.calls if isinstance(m, ACTIVATION_TYPES)]
        self._split = bool(dec_acts) and dec_acts[-1][1] is out and _kind(dec_acts[-1][0]) in (
            "sigmoid", "tanh")
        if self._split:
            self.output_activation = dec_acts[-1][0]
            dec_acts = dec_acts[:-1]
        else:
            self.output_activation = OUTPUT_ACTIVATIONS[output_activation][0]()
        self._acts = [*enc_acts, *([] if self._code_is_act else [self.code_stage]),
                      *[m for m, _ in dec_acts], self.output_activation]
        self.code_layer = len(enc_acts) - (1 if self._code_is_act else 0)

    @property
    def output_activation_name(self) -> str:
        return _kind(self.output_activation)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """The code (flat, (N, code_dim)) of flat images."""
        return self.encoder(x.view(len(x), *self.image_shape)).flatten(1)

    def _decoder_logits(self, code: torch.Tensor) -> torch.Tensor:
        code = code.view(len(code), *self.code_shape)
        if not self._split:
            return self.decoder(code).flatten(1)
        with _Calls([self.output_activation], ACTIVATION_TYPES) as last:
            self.decoder(code)
        return last.calls[-1][1].flatten(1)

    def decode(self, code: torch.Tensor) -> torch.Tensor:
        """The logits of every pixel, flat (N, C*H*W)."""
        return self._decoder_logits(code)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._decoder_logits(self.encoder(x.view(len(x), *self.image_shape)))

    def weight_layers(self) -> list[nn.Module]:
        return list(self._weight_layers)

    def activations(self) -> list[nn.Module]:
        return list(self._acts)

    def trace(self, x: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Pre-activations and activations of every stage, the output stage last."""
        with _Calls([self.encoder], ACTIVATION_TYPES) as enc:
            code = self.encoder(x.view(len(x), *self.image_shape))
        stages = [(z, a) for _, z, a in enc.calls]
        if not self._code_is_act:
            stages.append((code, code))
        stages[self.code_layer] = tuple(t.flatten(1) for t in stages[self.code_layer])
        with _Calls([self.decoder], ACTIVATION_TYPES) as dec:
            out = self.decoder(code)
        calls = [(z, a) for _, z, a in dec.calls]
        if self._split:
            *calls, (logits, _) = calls
            stages += [*calls, (logits.flatten(1), out.flatten(1))]
        else:
            logits = out.flatten(1)
            stages += [*calls, (logits, self.output_activation(logits))]
        return [z for z, _ in stages], [a for _, a in stages]

    def first_layer_filters(self) -> torch.Tensor:
        """W1 as images (units, C, h, w): a Linear on the pixels viewed as the image, a conv's
        kernels as they are, any other Linear as a row of its fan-in."""
        layer = self._weight_layers[0]
        w = layer.weight.detach()
        if isinstance(layer, nn.ConvTranspose2d):
            w = w.transpose(0, 1)
        if isinstance(layer, nn.Linear):
            if w.shape[1] == math.prod(self.image_shape):
                return w.view(w.shape[0], *self.image_shape)
            return w.view(w.shape[0], 1, 1, w.shape[1])
        return w


def accepted(target: Any, offered: dict[str, Any]) -> dict[str, Any]:
    """The items of `offered` that `target`'s signature names (none for **kwargs alone)."""
    try:
        params = inspect.signature(target).parameters
    except (TypeError, ValueError):
        return {}
    return {k: v for k, v in offered.items() if k in params and v is not None}


def build_custom(model: Any, image_shape: Sequence[int], activation: Any,
                 output: str) -> ModuleAutoencoder:
    """model=custom: the user's encoder and decoder (their `_target_`s), each given only the
    arguments its signature takes of image_shape, code_dim, activation and in_channels."""
    from hydra.utils import get_object

    from aelab.config.validate import instantiate

    if model.get("variational", False):
        raise ConfigError("model.variational=true needs aelab's own encoders (model=vae or "
                          "conv_vae); model=custom trains your modules as a plain autoencoder.")
    offered = {"image_shape": list(image_shape), "code_dim": model.get("code_dim"),
               "activation": activation, "in_channels": int(image_shape[0])}
    parts = []
    for part in ("encoder", "decoder"):
        target = str(model[part]._target_)
        try:
            found = get_object(target)
        except Exception as exc:
            raise ConfigError(f"model.{part}._target_={target} cannot be imported ({exc}); put "
                              f"its package on PYTHONPATH.") from None
        given = {k: v for k, v in accepted(found, offered).items() if k not in model[part]}
        parts.append(instantiate(model[part], **given))
    return ModuleAutoencoder(*parts, image_shape, output)
