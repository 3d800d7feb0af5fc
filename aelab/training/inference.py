"""What a trained Autoencoder does for its user: load it, encode, reconstruct, decode, sample.

    import aelab
    model = aelab.load("outputs/2026-01-01/12-00-00")   # a run folder, or its last.ckpt
    codes = model.encode(images)                          # images in [0, 1], (N, C, H, W)
    recon = model.reconstruct(images)                     # [0, 1] pixels, the images' shape
    fakes = model.sample(16)                              # a VAE: 16 images from the prior

Images are floats in [0, 1] (uint8 images are divided by 255), as (N, C, H, W), (N, H, W)
for grey images, (N, C*H*W) flat, or one image without the batch dimension; with
`normalized=True` they are the data's normalised values instead (the splits of
`aelab.load_data(run)`). Outputs are in [0, 1] pixel units (a normalisation such as
`standard` can decode a little outside). Nothing here records gradients.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch


class Inference:
    """The Autoencoder's user-facing methods (a mixin: `self` is the LightningModule, with its
    `net`, `loss_fn` and `normalization`)."""

    @classmethod
    def load_from_checkpoint(cls, checkpoint_path: str | Path, map_location: Any = None,
                             strict: bool = True, **kwargs: Any) -> Any:
        """The trained model of a run folder or a `last.ckpt` (single or stacked run, AE or
        VAE), in eval mode on `map_location` (a device; default the CPU). Its config comes
        from the checkpoint itself; `kwargs` replace constructor arguments."""
        from aelab.training.load import module_arguments, read_trained

        checkpoint, cfg = read_trained(checkpoint_path)
        model = cls(**(module_arguments(cfg, checkpoint) | kwargs))
        model.load_state_dict(checkpoint["state_dict"], strict=strict)
        return model.to(torch.device(map_location or "cpu")).eval()

    def _flat(self, x: Any, normalized: bool) -> tuple[torch.Tensor, tuple[int, ...]]:
        """(x as the net's flat, normalised input on its device, the shape to give back)."""
        x = torch.as_tensor(x)
        if x.dtype == torch.uint8:
            x = x.float() / 255
        pixels = math.prod(self.net.image_shape)
        shape = tuple(x.shape)
        if x.numel() == pixels and (x.dim() < 2 or x[0].numel() != pixels):
            x = x.reshape(1, pixels)  # one image without the batch dimension
        if x.dim() < 2 or x[0].numel() != pixels:
            raise ValueError(f"images of shape {shape} are not of the model's "
                             f"{tuple(self.net.image_shape)} (C, H, W)")
        x = x.reshape(len(x), pixels).to(self.device, self.dtype)
        return (x if normalized else self.normalization.encode(x)), shape

    @torch.no_grad()
    def encode(self, x: Any, normalized: bool = False) -> torch.Tensor:
        """The codes of images x, (N, code_dim) (a VAE: the posterior means)."""
        flat, _ = self._flat(x, normalized)
        return self.net.encode(flat)

    @torch.no_grad()
    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """The decoder's mean (the loss's prediction) at codes z, (N, C, H, W) in [0, 1]."""
        logits = self.net.decode(z.to(self.device, self.dtype))
        pred = self.loss_fn.prediction(logits, self.net.output_activation(logits))
        return self.normalization.decode(pred).reshape(len(z), *self.net.image_shape)

    @torch.no_grad()
    def reconstruct(self, x: Any, normalized: bool = False) -> torch.Tensor:
        """The reconstructions of images x in [0, 1] pixel units, in x's shape: what the
        run's metrics score (a VAE: decoded at the posterior mean)."""
        flat, shape = self._flat(x, normalized)
        logits = self.net(flat)
        pred = self.loss_fn.prediction(logits, self.net.output_activation(logits))
        return self.normalization.decode(pred).reshape(shape)

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """n images from a VAE's prior, z ~ N(0, I) decoded (the decoder's mean), (n, C, H, W)
        in [0, 1]; `generator` (a CPU torch.Generator) makes them repeatable."""
        if not self.net.variational:
            raise TypeError("sample() needs a VAE (model.variational=true): an autoencoder's "
                            "codes have no prior to draw from")
        z = torch.randn(n, self.net.code_dim, generator=generator)
        return self.decode(z)
