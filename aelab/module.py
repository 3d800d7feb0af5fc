"""The LightningModule: the autoencoder's training, validation and test steps."""

from __future__ import annotations

from collections.abc import Callable

import lightning as L
import torch
from torch import nn

from aelab.losses import ReconstructionLoss
from aelab.metrics import pixel_bce, pixel_mse
from aelab.nets import MLPAutoencoder
from aelab.normalization import Normalization


class Autoencoder(L.LightningModule):
    """Trains `net` with `loss` (plus an optional coupled L2 penalty on the weights).

    Logged per epoch: `train/loss` and `{val,test}/loss`, each the loss's per-pixel
    mean whatever its reduction, and `{val,test}/mse`, `{val,test}/bce`, scored in
    [0, 1] pixel units (decoded from the normalisation) so that every run is comparable.
    """

    def __init__(
        self,
        net: MLPAutoencoder,
        loss: ReconstructionLoss,
        optimizer: Callable[..., torch.optim.Optimizer],
        normalization: Normalization,
        l2_penalty: float = 0.0,
    ) -> None:
        super().__init__()
        self.net, self.loss_fn = net, loss
        self.optimizer_factory, self.normalization = optimizer, normalization
        self.l2_penalty = l2_penalty
        # BCE is exact from the logits when the shown prediction is sigmoid(logits) in pixel units
        self.bce_from_logits = (
            isinstance(net.output_activation, nn.Sigmoid)
            and type(loss).prediction is ReconstructionLoss.prediction
            and type(normalization).decode is Normalization.decode
        )

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = self.net(x)
        return logits, self.net.output_activation(logits)

    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """The prediction in [0, 1] pixel units (for images and pixel metrics)."""
        logits, recon = self(x)
        return self.normalization.decode(self.loss_fn.prediction(logits, recon))

    def l2(self) -> torch.Tensor:
        return sum(lin.weight.square().sum() for lin in self.net.linears)

    def objective(self, batch: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(the loss to minimise, its per-pixel mean for logging) on one batch."""
        logits, recon = self(batch)
        per_pixel = self.loss_fn.per_pixel(logits, recon, batch)
        objective = self.loss_fn.reduce(per_pixel)
        if self.l2_penalty:
            objective = objective + self.l2_penalty * self.l2()
        return objective, per_pixel.detach().mean()

    def training_step(self, batch: torch.Tensor, batch_idx: int) -> torch.Tensor:
        objective, loss = self.objective(batch)
        self._log_train_loss(loss, len(batch), batch_idx)
        return objective

    def _log_train_loss(self, loss: torch.Tensor, n: int, batch_idx: int) -> None:
        """`train/loss_step` every `log_every_n_steps` steps and the epoch mean `train/loss` at
        the epoch's last batch: a running sum on the device instead of a log call per step."""
        trainer = self.trainer
        if batch_idx == 0:
            self._loss_sum, self._seen = torch.zeros_like(loss), 0
        self._loss_sum += loss * n
        self._seen += n
        if trainer.global_step % trainer.log_every_n_steps == 0:
            self.log("train/loss_step", loss, on_step=True, on_epoch=False, prog_bar=True)
        last_of_run = 0 < trainer.max_steps <= trainer.global_step + 1
        if batch_idx == trainer.num_training_batches - 1 or last_of_run:
            self.log("train/loss", self._loss_sum / self._seen, on_step=False, on_epoch=True)

    def _evaluate(self, batch: torch.Tensor, stage: str) -> None:
        logits, recon = self(batch)
        pred = self.loss_fn.prediction(logits, recon)
        target = self.normalization.decode(batch)
        metrics = {
            f"{stage}/loss": self.loss_fn.per_pixel(logits, recon, batch).mean(),
            f"{stage}/mse": pixel_mse(self.normalization.decode(pred), target),
            f"{stage}/bce": pixel_bce(
                self.normalization.decode(pred), target, logits if self.bce_from_logits else None
            ),
        }
        self.log_dict(metrics, on_epoch=True, prog_bar=stage == "val", batch_size=len(batch))

    def validation_step(self, batch: torch.Tensor, batch_idx: int) -> None:
        self._evaluate(batch, "val")

    def test_step(self, batch: torch.Tensor, batch_idx: int) -> None:
        self._evaluate(batch, "test")

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return self.optimizer_factory(self.parameters())
