"""`Doctor`: aelab's diagnostics and diagnosis for any Lightning autoencoder.

    from aelab import Doctor
    trainer = lightning.Trainer(callbacks=[Doctor()], ...)
    trainer.fit(model, train_loader, val_loader)
    print(trainer.callbacks[0].diagnosis)   # also in the logger, and printed

The one hook it needs from the LightningModule: `encoder` and `decoder` attributes, plain
`nn.Module`s that take and return images (N, C, H, W) (the code is the encoder's output; end
the decoder with `nn.Sigmoid()` for [0, 1] images). The probe set is the first `probe_size`
images of the validation loader (else the training loader); a batch may be a tensor, or a
tuple/list/dict whose first tensor is the images. Each epoch it logs the blob, collapse,
unit, gradient and rank metrics (aelab.diagnostics.callback) to the Trainer's loggers; at
the end, the diagnosis: printed, `self.diagnosis`, TensorBoard text `doctor/diagnosis` and
scalars `doctor/<cause>` (its confidence) on any logger. Fixes come in words: there is no
aelab config to override.
"""

from __future__ import annotations

import logging
from typing import Any

import lightning as L
import torch
from torch import nn

from aelab.diagnostics import metrics as dg
from aelab.diagnostics.callback import Diagnostics
from aelab.diagnostics.gradients import layer_names
from aelab.doctor.diagnose import describe, diagnose
from aelab.models.custom import ModuleAutoencoder
from aelab.training.callbacks import tensorboard

log = logging.getLogger("aelab")
MEAN_IMAGES = 4096  # training images averaged for the mean image x_bar, at most


def _images(batch: Any) -> torch.Tensor:
    """The images of a batch: the tensor itself, or the first tensor of a tuple/list/dict."""
    if torch.is_tensor(batch):
        return batch
    items = batch.values() if isinstance(batch, dict) else batch
    for item in items:
        if torch.is_tensor(item):
            return item
    raise TypeError("Doctor: a batch holds no tensor of images")


def _first(loader: Any, n: int) -> torch.Tensor:
    taken, count = [], 0
    for batch in loader:
        x = _images(batch).detach().float()
        taken.append(x)
        count += len(x)
        if count >= n:
            break
    return torch.cat(taken)[:n]


class Doctor(Diagnostics):
    """Diagnostics and the diagnosis for a LightningModule with `encoder` and `decoder`."""

    def __init__(self, probe_size: int = 512, every_n_epochs: int = 1, sample_every: int = 10,
                 histograms: bool = False, thresholds: dict[str, float] | None = None) -> None:
        super().__init__(every_n_epochs=every_n_epochs, probe_size=probe_size,
                         sample_every=sample_every, histograms=histograms, filters=False,
                         thresholds=thresholds)
        self._net: ModuleAutoencoder | None = None
        self.diagnosis: dict[str, Any] | None = None

    def net_of(self, pl_module: L.LightningModule) -> nn.Module:
        if self._net is None:
            raise RuntimeError("Doctor: the net is made at on_train_start")
        return self._net

    @staticmethod
    def prediction(pl_module: L.LightningModule, logits: torch.Tensor,
                   output: torch.Tensor) -> torch.Tensor:
        return output  # the decoder's own output, in the images' units

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        for part in ("encoder", "decoder"):
            if not isinstance(getattr(pl_module, part, None), nn.Module):
                raise AttributeError(
                    f"Doctor needs the LightningModule's `{part}` (an nn.Module on images "
                    f"(N, C, H, W)); {type(pl_module).__name__} has none.")
        val = trainer.val_dataloaders
        loader = (val[0] if isinstance(val, (list, tuple)) else val) or trainer.train_dataloader
        probe = _first(loader, self.probe_size).to(pl_module.device)
        train = _first(trainer.train_dataloader, MEAN_IMAGES).to(pl_module.device)
        self._net = ModuleAutoencoder(pl_module.encoder, pl_module.decoder, probe.shape[1:])
        if self.w0 is None:
            self.w0 = [w.clone() for w in self._weights(pl_module)]
        self.layers = layer_names(self._net)
        self._probe = self._target = probe.flatten(1)
        self._mean_image = train.flatten(1).mean(0)
        self._entropy = dg.target_entropy(self._target)
        baseline = dg.mean_image_baseline(self._target, self._mean_image)
        self._baseline = {f"blob/mean_image/{k}": v for k, v in baseline.items()}
        self._reset_accumulators()
        if not self.history:
            self._measure(trainer, pl_module, epochs_done=0)

    def _measure(self, trainer: L.Trainer, pl_module: L.LightningModule, epochs_done: int) -> None:
        super()._measure(trainer, pl_module, epochs_done)  # TensorBoard gets them there
        if tensorboard(trainer) is None:
            values = {k: v[-1] for k, v in self.history.items() if k not in ("epoch", "loss")}
            for logger in trainer.loggers:
                logger.log_metrics(values, step=epochs_done)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_train_end(trainer, pl_module)
        summary = self.summary()
        self.diagnosis = diagnose({"status": "completed", **summary}, None)
        text = describe(self.diagnosis)
        log.warning("%s", text) if self.diagnosis["causes"] else log.info("%s", text)
        print(text, flush=True)
        epochs = int((self.history.get("epoch") or [0])[-1])
        scores = {f"doctor/{c['cause']}": c["confidence"] for c in self.diagnosis["causes"]}
        writer = tensorboard(trainer)
        if writer is not None:
            writer.add_text("doctor/diagnosis", "    " + text.replace("\n", "\n    "), epochs)
        for logger in trainer.loggers:
            logger.log_metrics(scores | {"doctor/causes": float(len(scores))}, step=epochs)
            logger.save()
