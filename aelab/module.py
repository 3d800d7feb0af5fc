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


class RunningMeans:
    """Size-weighted means of per-batch metrics, summed on the device (no host sync per batch)."""

    def __init__(self) -> None:
        self.sums: dict[str, torch.Tensor] = {}
        self.count = 0

    def add(self, values: dict[str, torch.Tensor], n: int) -> None:
        for key, value in values.items():
            if key in self.sums:
                self.sums[key] += value * n
            else:
                self.sums[key] = value * n
        self.count += n

    def means(self) -> dict[str, torch.Tensor]:
        return {key: total / self.count for key, total in self.sums.items()}


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
        self.automatic_optimization = False  # training_step steps the optimiser (see there)
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

    def training_step(self, batches: list[torch.Tensor], batch_idx: int) -> dict[str, torch.Tensor]:
        """One optimiser step per batch in `batches` (`steps_per_call` of them, see StepChunks).

        The last step goes through Lightning (`manual_backward`, the LightningOptimizer), so
        its hooks - on_before_backward, on_after_backward, on_before_optimizer_step and the
        batch hooks around this call - fire once per call, on its last step; the others are
        plain `backward()` and `step()`. Returns the steps' objectives, detached, for the
        divergence check (one host sync per call, in FiniteGuard).
        """
        trainer, optimizer = self.trainer, self.optimizers()
        if batch_idx == 0:
            self._train_means = RunningMeans()
        n = len(batches)
        if trainer.max_steps > 0:
            n = min(n, trainer.max_steps - trainer.global_step)
        objectives = []
        for i, batch in enumerate(batches[:n]):
            objective, loss = self.objective(batch)
            self._train_means.add({"train/loss": loss}, len(batch))
            if trainer.global_step % trainer.log_every_n_steps == 0:
                self._log_step_loss(loss)
            objectives.append(objective.detach())
            if i < n - 1:
                optimizer.optimizer.zero_grad()
                objective.backward()
                optimizer.optimizer.step()
                self._count_step()
            else:
                optimizer.zero_grad()
                self.manual_backward(objective)
                optimizer.step()
        # Lightning adds 1 after this call: the loggers' x axis stays the optimiser step
        trainer.fit_loop.epoch_loop._batches_that_stepped = trainer.global_step - 1
        last_of_run = 0 < trainer.max_steps <= trainer.global_step
        if batch_idx == trainer.num_training_batches - 1 or last_of_run:
            self.log_dict(self._train_means.means(), on_step=False, on_epoch=True,
                          batch_size=self._train_means.count)
        return {"objectives": torch.stack(objectives)}

    def _count_step(self) -> None:
        """Count a step taken without the LightningOptimizer in `trainer.global_step`, as the
        LightningOptimizer counts its own."""
        progress = self.trainer.fit_loop.epoch_loop.manual_optimization.optim_step_progress
        progress.increment_ready()
        progress.increment_completed()

    def _log_step_loss(self, loss: torch.Tensor) -> None:
        """`train/loss_step` at this optimiser step (every `log_every_n_steps`; one host sync)."""
        step = self.trainer.global_step
        value = float(loss)
        for logger in self.loggers:
            logger.log_metrics({"train/loss_step": value}, step=step)
        self.log("train/loss_step", value, on_step=True, on_epoch=False, prog_bar=True,
                 logger=False, batch_size=1)

    def _evaluate(self, batch: torch.Tensor, batch_idx: int, stage: str) -> None:
        """Add this batch's metrics, weighted by its size, to the epoch's sums (on the device)."""
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
        if batch_idx == 0:
            self._eval_means = RunningMeans()
        self._eval_means.add(metrics, len(batch))

    def _log_evaluation(self, stage: str) -> None:
        """The epoch's size-weighted means: what `self.log` per batch would give, in 3 calls."""
        self.log_dict(self._eval_means.means(), on_epoch=True, prog_bar=stage == "val",
                      batch_size=self._eval_means.count)

    def validation_step(self, batch: torch.Tensor, batch_idx: int) -> None:
        self._evaluate(batch, batch_idx, "val")

    def on_validation_epoch_end(self) -> None:
        self._log_evaluation("val")

    def test_step(self, batch: torch.Tensor, batch_idx: int) -> None:
        self._evaluate(batch, batch_idx, "test")

    def on_test_epoch_end(self) -> None:
        self._log_evaluation("test")

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return self.optimizer_factory(self.parameters())
