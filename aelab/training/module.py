"""The LightningModule: the autoencoder's training, validation and test steps."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

import lightning as L
import torch
from torch import nn

from aelab.config.validate import VAESettings
from aelab.data.normalization import Normalization
from aelab.diagnostics.pixel import pixel_bce, pixel_mse
from aelab.losses import ReconstructionLoss
from aelab.losses.elbo import (
    free_bits_kl,
    gaussian_kl,
    iwae_bound,
    kl_weight,
    log_normal_diag,
    log_standard_normal,
    negative_elbo,
    reparameterise,
)
from aelab.models import EncoderDecoder
from aelab.training.backward import backward_is_heard
from aelab.training.inference import Inference
from aelab.training.load import STATE_KEY
from aelab.training.runstate import run_datamodule
from aelab.training.schedulers import build_scheduler

EVAL_SEED = 0  # the z samples of every validation/test pass: the same noise each epoch
IWAE_ROWS = 256  # decoder rows (samples x images) per call in the IWAE bound: a conv decoder
# runs 10x faster per row at 256 rows than at 32768 (2-core EPYC, one thread: 2.9 s vs 27.7 s
# per 32768 rows), whose activations (0.8 GB a layer) leave the cache; an MLP does not care


def run_length(images: int, batch_size: int, accumulate: int, max_epochs: int | None,
               max_steps: int = -1) -> tuple[int, int]:
    """(optimiser steps per epoch, epochs) of a run; max_steps, when set, ends it first."""
    per_epoch = math.ceil(math.ceil(images / batch_size) / accumulate)
    epochs = max_epochs if max_epochs and max_epochs > 0 else 1
    if max_steps and max_steps > 0:
        epochs = min(epochs, math.ceil(max_steps / per_epoch))
    return per_epoch, epochs


class RunningMeans:
    """Size-weighted means of per-batch metrics, summed on the device (no host sync per batch)."""

    def __init__(self) -> None:
        self.sums: dict[str, torch.Tensor] = {}
        self.count = 0

    def add(self, values: dict[str, torch.Tensor], n: int) -> None:
        for key, value in values.items():
            if key in self.sums:
                self.sums[key].add_(value, alpha=n)
            else:
                self.sums[key] = value * n
        self.count += n

    def means(self) -> dict[str, torch.Tensor]:
        return {key: total / self.count for key, total in self.sums.items()}


class Autoencoder(Inference, L.LightningModule):
    """Trains `net` with `loss` (plus an optional coupled L2 penalty on the weights).

    Logged per epoch: `train/loss` and `{val,test}/loss`, each the loss's per-pixel
    mean whatever its reduction, and `{val,test}/mse`, `{val,test}/bce`, scored in
    [0, 1] pixel units (decoded from the normalisation) so that every run is comparable.

    With `vae` (model.variational=true) the net is a VAE and the objective is the negative
    (beta-)ELBO per image, batch mean: -log p(x|z) summed over pixels (the loss's
    `nll_per_pixel`, z ~ q(z|x) by reparameterisation) + kl_weight * KL(q(z|x) || N(0, I))
    (free bits when model.free_bits > 0), plus the L2 penalty. Also logged, in nats per
    image: `train/elbo`, `train/kl`, `{val,test}/{elbo,nll,kl}` (elbo = -(nll + kl), the
    bound on log p(x) with weight 1 and one z sample) and `test/iwae`, the importance-weighted
    bound with `iwae_samples` z per image (k decoder passes per test image). `loss`, `mse`
    and `bce` are then those of the decoder's output at the posterior mean.

    A trained one loads with `Autoencoder.load_from_checkpoint(run folder or last.ckpt)`
    (`aelab.load`) and has `encode`, `reconstruct`, `decode` and (a VAE) `sample`
    (aelab.training.inference).
    """

    def __init__(
        self,
        net: EncoderDecoder,
        loss: ReconstructionLoss,
        optimizer: Callable[..., torch.optim.Optimizer],
        normalization: Normalization,
        l2_penalty: float = 0.0,
        scheduler: dict[str, Any] | None = None,
        gradient_clip_val: float | None = None,
        gradient_clip_algorithm: str = "norm",
        accumulate_grad_batches: int = 1,
        vae: VAESettings | None = None,
    ) -> None:
        super().__init__()
        if vae is not None and not net.variational:
            raise ValueError("vae settings need a net with a VariationalEncoder")
        self.vae = vae
        self._kl_epoch = 0.0  # the (fractional) epoch the KL weight is taken at
        self._steps_per_epoch = 1
        self._plain_backward = False  # on_train_start decides (aelab.training.backward)
        self.automatic_optimization = False  # training_step steps the optimiser (see there)
        self.net, self.loss_fn = net, loss
        self.optimizer_factory, self.normalization = optimizer, normalization
        self.l2_penalty = l2_penalty
        # Lightning refuses these Trainer arguments under manual optimisation: aelab applies them
        self.gradient_clip_val = gradient_clip_val
        self.gradient_clip_algorithm = gradient_clip_algorithm
        self.accumulate_grad_batches = accumulate_grad_batches
        self.scheduler_config = dict(scheduler or {})
        name = self.scheduler_config.get("name", "none")
        self.scheduler_interval = None if name == "none" else self.scheduler_config.get(
            "interval", "epoch")
        self.scheduler_on_validation = name == "plateau"
        self.objective_is_mean = (type(loss).reduce is ReconstructionLoss.reduce
                                  and loss.reduction == "mean")
        # BCE is exact from the logits when the shown prediction is sigmoid(logits) in pixel units
        self.bce_from_logits = (
            isinstance(net.output_activation, nn.Sigmoid)
            and type(loss).prediction is ReconstructionLoss.prediction
            and type(normalization).decode is Normalization.decode
        )

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = self.net(x)
        return logits, self.net.output_activation(logits)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """The image shape and the normalisation's statistics, so that the model loads from
        its checkpoint alone (aelab.training.load)."""
        checkpoint[STATE_KEY] = {"image_shape": [int(s) for s in self.net.image_shape],
                                 "normalization": self.normalization.state_dict()}

    def l2(self) -> torch.Tensor:
        return sum(layer.weight.square().sum() for layer in self.net.weight_layers())

    def objective(self, batch: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(the loss to minimise, its per-pixel mean for logging) on one batch."""
        objective, metrics = self.objective_terms(batch)
        return objective, metrics["train/loss"]

    def objective_terms(
        self, batch: torch.Tensor, generator: torch.Generator | None = None,
        noise: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """(the loss to minimise, the detached training metrics of the batch). A VAE draws its
        z ~ q(z|x) with `generator` (None: torch's), or takes `noise`, the N(0, I) draws
        shaped like the code (a stacked group draws each run's from the run's generator)."""
        if self.vae is None:
            logits, recon = self(batch)
            return self.reconstruction_objective(batch, logits, recon)
        mu, logvar, logits, recon, nll = self.vae_terms(batch, generator, noise)
        kl_dim = gaussian_kl(mu, logvar)
        kl = kl_dim.sum(1)
        weight = kl_weight(self._kl_epoch, self.vae.beta, self.vae.kl_warmup_epochs)
        kl_term = free_bits_kl(kl_dim, self.vae.free_bits) if self.vae.free_bits > 0 else kl
        objective = negative_elbo(nll, kl_term, weight)
        if self.l2_penalty:
            objective = objective + self.l2_penalty * self.l2()
        with torch.no_grad():
            metrics = {
                "train/loss": self.loss_fn.per_pixel(logits, recon, batch).mean(),
                "train/elbo": -(nll + kl).mean(),
                "train/kl": kl.mean(),
            }
        return objective, metrics

    def reconstruction_objective(
        self, batch: torch.Tensor, logits: torch.Tensor, recon: torch.Tensor,
        l2: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """An autoencoder's objective from the net's outputs on `batch`: the loss's reduction
        of its per-pixel values, plus the L2 penalty (on `l2`, the weights' sum of squares,
        when the caller has it: a stacked group's batched net; else `self.l2()`), and the
        detached per-pixel mean. objective_terms' own, and a stacked MLP group's per run."""
        per_pixel = self.loss_fn.per_pixel(logits, recon, batch)
        objective = self.loss_fn.reduce(per_pixel)
        # the per-pixel mean is the objective itself under the default mean reduction
        mean = objective.detach() if self.objective_is_mean else per_pixel.detach().mean()
        if self.l2_penalty:
            objective = objective + self.l2_penalty * (self.l2() if l2 is None else l2)
        return objective, {"train/loss": mean}

    def vae_terms(
        self, batch: torch.Tensor, generator: torch.Generator | None = None,
        noise: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, ...]:
        """(mu, logvar, logits, recon, nll) of a VAE on a batch, one z ~ q(z|x) per image
        (from `noise` when given, see objective_terms);
        nll = -log p(x|z) per image, (N,), the loss's `nll_per_pixel` summed over pixels
        (its `per_pixel` for a loss that is no likelihood, model.allow_non_likelihood)."""
        mu, logvar = self.net.posterior(batch)
        z = reparameterise(mu, logvar, generator=generator, noise=noise)
        logits = self.net.decode(z)
        recon = self.net.output_activation(logits)
        return mu, logvar, logits, recon, self._nll(logits, recon, batch)

    def _nll(self, logits: torch.Tensor, recon: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """-log p(target | decoder output) per image, summed over the pixels (flat targets)."""
        per_pixel = (self.loss_fn.nll_per_pixel if self.loss_fn.likelihood is not None
                     else self.loss_fn.per_pixel)(logits, recon, target)
        return per_pixel.flatten(1).sum(1)

    def iwae(self, batch: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor, k: int,
             generator: torch.Generator | None = None) -> torch.Tensor:
        """The k-sample importance-weighted bound on log p(x) per image, (N,): k decoder
        passes per image, in decoder calls of at most IWAE_ROWS rows (samples x images)."""
        bounds = []
        for first in range(0, len(batch), IWAE_ROWS):
            images = slice(first, first + IWAE_ROWS)
            x, m, lv = batch[images], mu[images], logvar[images]
            chunk = max(1, IWAE_ROWS // len(x))
            log_px, log_pz, log_qz = [], [], []
            for start in range(0, k, chunk):
                n = min(chunk, k - start)
                z = reparameterise(m, lv, n, generator)  # (n, images, D)
                logits = self.net.decode(z.flatten(0, 1))
                target = x.repeat(n, *([1] * (x.dim() - 1)))
                nll = self._nll(logits, self.net.output_activation(logits), target)
                log_px.append(-nll.view(n, -1))
                log_pz.append(log_standard_normal(z))
                log_qz.append(log_normal_diag(z, m, lv))
            bounds.append(iwae_bound(torch.cat(log_px), torch.cat(log_pz), torch.cat(log_qz)))
        return torch.cat(bounds)

    def on_train_start(self) -> None:
        self._plain_backward = not backward_is_heard(self)
        data = run_datamodule(self.trainer, self)
        self._steps_per_epoch = max(1, math.ceil(len(data.splits["train"]) / data.batch_size))

    def on_train_epoch_start(self) -> None:
        # here, not at batch 0: a run resumed mid-epoch starts its means afresh
        self._train_means = RunningMeans()
        self._batches_seen = 0

    def training_step(self, batches: list[torch.Tensor], batch_idx: int) -> dict[str, torch.Tensor]:
        """One backward pass per batch in `batches` (`steps_per_call` of them, see StepChunks),
        one optimiser step per `accumulate_grad_batches` of them.

        Every pass and step goes through Lightning's public manual-optimisation API
        (`manual_backward`, the LightningOptimizer's `step`), so the backward/optimizer hooks,
        the precision plugin (AMP's grad scaler), gradient clipping (on_before_optimizer_step)
        and the step count (`trainer.global_step`) see every step; only the batch hooks
        around this call run once per call. The backward pass is a plain `loss.backward()`
        where no backward hook, precision plugin or strategy needs Lightning's
        (aelab.training.backward). Returns the batches' objectives, detached, and the
        global step each batch went into, for the divergence check (one host sync per call,
        in FiniteGuard).
        """
        trainer, optimizer = self.trainer, self.optimizers()
        scheduler = self.lr_schedulers() if self.scheduler_interval == "step" else None
        accumulate = self.accumulate_grad_batches
        last_call = batch_idx == trainer.num_training_batches - 1
        objectives, at_step = [], []
        # the trainer's and module's counters read once a call (Lightning's properties and
        # nn.Module's __setattr__ every step cost ~20 us of a 1.9 ms step, measured)
        max_steps, log_every = trainer.max_steps, trainer.log_every_n_steps
        epoch, seen = self.current_epoch, self._batches_seen
        for i, batch in enumerate(batches):
            step = trainer.global_step
            if 0 < max_steps <= step:
                break
            first, seen = seen % accumulate == 0, seen + 1
            steps = seen % accumulate == 0 or (last_call and i == len(batches) - 1)
            if self.vae is not None:
                self._kl_epoch = epoch + (seen - 1) / self._steps_per_epoch
            objective, metrics = self.objective_terms(batch)
            self._train_means.add(metrics, len(batch))
            if first and step % log_every == 0:
                self._log_step_values(metrics["train/loss"], optimizer)
            objectives.append(objective.detach())
            at_step.append(step)
            if first:
                optimizer.zero_grad()
            self._backward(objective / accumulate if accumulate > 1 else objective)
            if steps:
                optimizer.step()
                if scheduler is not None:
                    scheduler.step()
        self._batches_seen = seen
        last_of_run = 0 < max_steps <= trainer.global_step
        if last_call or last_of_run:
            self._log_epoch(self._train_means.means() | self.loss_fn.learned_values(),
                            self._train_means.count, epoch_end=True)
            # the lr the epoch's last step used (metrics.json; TensorBoard has it per step)
            self.log("train/lr", self.lr(optimizer), on_step=False, on_epoch=True, logger=False,
                     batch_size=1)
            if self.scheduler_interval == "epoch" and not self.scheduler_on_validation:
                self.lr_schedulers().step()
        return {"objectives": torch.stack(objectives) if objectives else torch.zeros(0),
                "steps": at_step}

    def _backward(self, loss: torch.Tensor) -> None:
        """manual_backward, or loss.backward() where no hook listens (aelab.training.backward)."""
        if self._plain_backward:
            loss.backward()
        else:
            self.manual_backward(loss)

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        """Clip here, where Lightning clips under automatic optimisation: after AMP unscales."""
        if self.gradient_clip_val:
            self.clip_gradients(optimizer, gradient_clip_val=self.gradient_clip_val,
                                gradient_clip_algorithm=self.gradient_clip_algorithm)

    @staticmethod
    def lr(optimizer: torch.optim.Optimizer) -> float:
        return float(optimizer.param_groups[0]["lr"])

    def _log_epoch(self, values: dict[str, torch.Tensor], count: int, epoch_end: bool,
                   prog_bar: bool = False) -> None:
        """Epoch-level metrics at the epoch's last optimiser step on TensorBoard's x axis
        (Lightning's documented `step` metric; its own count is Lightning batches, which
        `steps_per_call` makes fewer than steps)."""
        self.log_dict(values, on_step=False, on_epoch=True, prog_bar=prog_bar, batch_size=count)
        self.log("step", float(self.global_step - 1 if epoch_end else self.global_step),
                 on_step=False, on_epoch=True, batch_size=1)
        self.log("epoch", float(self.current_epoch), on_step=False, on_epoch=True, batch_size=1)

    def _log_step_values(self, loss: torch.Tensor, optimizer: torch.optim.Optimizer) -> None:
        """`train/loss_step` and `train/lr` at this optimiser step (every `log_every_n_steps`;
        one host sync)."""
        step = self.trainer.global_step
        value = float(loss)
        for logger in self.loggers:
            logger.log_metrics({"train/loss_step": value, "train/lr": self.lr(optimizer)},
                               step=step)
        self.log("train/loss_step", value, on_step=True, on_epoch=False, prog_bar=True,
                 logger=False, batch_size=1)

    def _evaluate(self, batch: torch.Tensor, batch_idx: int, stage: str) -> None:
        """Add this batch's metrics, weighted by its size, to the epoch's sums (on the device)."""
        if batch_idx == 0:
            self._eval_means = RunningMeans()
            if self.vae is not None:
                self._eval_generator = torch.Generator(batch.device).manual_seed(EVAL_SEED)
        metrics = {}
        if self.vae is not None:
            mu, logvar, _, _, nll = self.vae_terms(batch, self._eval_generator)
            kl = gaussian_kl(mu, logvar).sum(1)
            metrics = {f"{stage}/elbo": -(nll + kl).mean(), f"{stage}/nll": nll.mean(),
                       f"{stage}/kl": kl.mean()}
            if stage == "test":
                bound = self.iwae(batch, mu, logvar, self.vae.iwae_samples, self._eval_generator)
                metrics["test/iwae"] = bound.mean()
        logits, recon = self(batch)  # a VAE: the decoder at the posterior mean
        pred = self.loss_fn.prediction(logits, recon)
        target = self.normalization.decode(batch)
        metrics |= {
            f"{stage}/loss": self.loss_fn.per_pixel(logits, recon, batch).mean(),
            f"{stage}/mse": pixel_mse(self.normalization.decode(pred), target),
            f"{stage}/bce": pixel_bce(
                self.normalization.decode(pred), target, logits if self.bce_from_logits else None
            ),
        }
        self._eval_means.add(metrics, len(batch))

    def _log_evaluation(self, stage: str) -> None:
        """The epoch's size-weighted means: what `self.log` per batch would give, in 3 calls."""
        means = self._eval_means.means()
        self._log_epoch(means, self._eval_means.count, epoch_end=stage == "val",
                        prog_bar=stage == "val")
        if stage == "val" and self.scheduler_on_validation and not self.trainer.sanity_checking:
            self.lr_schedulers().step(means["val/loss"])

    @torch.no_grad()
    def evaluate(self, batches: Iterable[torch.Tensor], stage: str) -> dict[str, torch.Tensor]:
        """The `{stage}/...` means over `batches` that validation/test log, without a Trainer
        (a stacked run's slot is evaluated through its single run's module)."""
        was_training = self.training
        self.eval()
        for i, batch in enumerate(batches):
            self._evaluate(batch, i, stage)
        self.train(was_training)
        return self.evaluated()

    def evaluated(self) -> dict[str, torch.Tensor]:
        """The `{stage}/...` means of the batches evaluated since the stage's first batch."""
        return self._eval_means.means()

    def validation_step(self, batch: torch.Tensor, batch_idx: int) -> None:
        self._evaluate(batch, batch_idx, "val")

    def on_validation_epoch_end(self) -> None:
        self._log_evaluation("val")

    def test_step(self, batch: torch.Tensor, batch_idx: int) -> None:
        self._evaluate(batch, batch_idx, "test")

    def on_test_epoch_end(self) -> None:
        self._log_evaluation("test")

    def schedule_length(self) -> tuple[int, int]:
        """(optimiser steps per epoch, epochs) of the run, which a scheduler spans."""
        trainer = self.trainer
        return run_length(len(trainer.datamodule.splits["train"]), trainer.datamodule.batch_size,
                          self.accumulate_grad_batches, trainer.max_epochs, trainer.max_steps)

    def configure_optimizers(self) -> Any:
        optimizer = self.optimizer_factory(self.parameters())
        if self.scheduler_interval is None:
            return optimizer
        per_epoch, epochs = self.schedule_length()
        scheduler = build_scheduler(self.scheduler_config, optimizer, per_epoch, epochs)
        return {"optimizer": optimizer, "lr_scheduler": scheduler}
