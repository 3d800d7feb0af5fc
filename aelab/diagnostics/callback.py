"""The Diagnostics callback: blob, collapse, unit, gradient and rank metrics in TensorBoard.

Every `every_n_epochs` epochs (and after the last), in eval mode without gradients, on
the fixed probe set (the first `probe_size` validation images) it logs:

- `blob/{ev,r,d,mse,bce_excess}` and `blob/mean_image/...`, the same for the constant
  prediction x_bar (the training mean image): the "blob line";
- `collapse/{norm_ratio,change,max_abs,shrunk_units}/W<i>` per layer, weight histograms
  `collapse/weights/W<i>` and the first layer's weights as tiles, `collapse/W1_filters`;
- `units/{saturation,dead,input_dependence}/h<i>` per hidden layer (saturation for sigmoid
  and tanh, dead for ReLU-like units), `units/saturation/out` and `units/exact_bound/out`;
- `rank/code` and `rank/W1`, the effective ranks of the codes and of W1;
- a VAE (model.variational=true), from the posterior means and log-variances of the probe:
  `latent/kl/z<i>` (the KL each latent dimension spends, nats per image; up to
  LATENT_SCALARS dimensions, else the histogram `latent/kl`), `latent/kl_total`,
  `latent/active_units` (Burda et al.'s count) and `latent/mutual_information` (I_q(x; z),
  at most log(probe_size)); the verdict `posterior_collapse` comes from them;
- `weights/gain/W<i>`, rms(W) x sqrt(fan-in) (the init's scale at epoch 0);
- `grads/data/W1` and `grads/penalty/W1`, the data term's and the weight penalty's gradient
  norms at W1 (aelab.diagnostics.gradients), sampled like grads/norm;
- `grads/norm/W<i>`, ||dL/dW<i>||_F, and `grads/update_ratio/W<i>`, the realised step
  ||W_t - W_{t-1}||_F / ||W_{t-1}||_F, each the mean over one optimiser step in every
  `sample_every` since the last measurement, accumulated as tensors on the device (no host
  sync per step). The step sampled is the first in each window of `sample_every` steps
  (Lightning's optimizer hooks see every step, whatever `steps_per_call`). Sampling every
  10th step costs about 3 % of an MNIST epoch of the seed MLP on a 2-core CPU (0.4 ms a
  sample; measured 2026-12-06); a stacked group samples all its runs at once.

The TensorBoard step is the number of training epochs completed (0 is the initialisation).
Other loggers (CSV, Weights & Biases) get the scalars at the global step of the epoch's
metrics (0 for the initialisation); images go to TensorBoard and W&B, histograms to
TensorBoard only.
`summary()` gives the verdict and the final numbers that train.py writes to metrics.json.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import lightning as L
import torch
from lightning.pytorch.loggers import TensorBoardLogger
from torch import nn

from aelab.diagnostics import gradients, latent
from aelab.diagnostics import metrics as dg
from aelab.diagnostics import verdict as verdicts
from aelab.diagnostics.images import image_grid
from aelab.errors import ConfigError
from aelab.losses import elbo
from aelab.models import unit_rows
from aelab.training.callbacks import image_loggers, log_image, tensorboard
from aelab.training.runstate import run_datamodule, run_loggers, run_metrics

RELU_LIKE = (nn.ReLU, nn.LeakyReLU, nn.ELU, nn.GELU, nn.SiLU, nn.CELU, nn.SELU, nn.ReLU6)
SATURATION_THRESHOLDS = {nn.Sigmoid: dg.SIGMOID_SATURATION, nn.Tanh: dg.TANH_SATURATION}
OUTPUT_BOUNDS = {nn.Sigmoid: (0.0, 1.0), nn.Tanh: (-1.0, 1.0)}
LATENT_SCALARS = 64  # latent/kl/z<i> for codes up to this size; a histogram beyond
MI_SEED = 0  # the z samples of the mutual-information estimate: the same each measurement
FILTER_SCALE = 3.0  # tile colour scale: grey is 0, black/white are -/+ 3 rms of the initial W1


def add_histogram(writer: Any, tag: str, values: torch.Tensor, step: int, bins: int = 64) -> None:
    """Log a histogram of `values` in `bins` equal buckets, computed by torch.

    SummaryWriter.add_histogram goes through numpy with ~1500 "tensorflow" buckets; the
    large record is checksummed in pure Python on TensorBoard's writer thread, which
    slowed the next training steps down measurably. Non-finite values are skipped.
    """
    values = values.detach().flatten().float()
    if not bool(torch.isfinite(values).all()):
        return
    lo, hi, total, squares = torch.stack(
        [values.min(), values.max(), values.sum(), values.square().sum()]
    ).tolist()
    if hi <= lo:
        hi = lo + 1e-12
    counts = torch.histc(values, bins=bins, min=lo, max=hi)
    limits = torch.linspace(lo, hi, bins + 1)[1:]
    writer.add_histogram_raw(
        tag, lo, hi, values.numel(), total, squares, limits.tolist(), counts.tolist(), step
    )


def channels_last(z: torch.Tensor) -> torch.Tensor:
    """(N, C, H, W) conv pre-activations as (N*H*W, C) samples of C units; (N, units) as is."""
    return z.movedim(1, -1).reshape(-1, z.shape[1]) if z.dim() > 2 else z


def filter_grid(shades: torch.Tensor, min_side: int = 12) -> torch.Tensor:
    """(units, C, h, w) filter images in [0, 1] as one (C, H, W) grid (C = 1 grey or 3 colour;
    other channel counts are tiled one grey tile per unit and channel), a square of tiles,
    small kernels enlarged (nearest) to >= `min_side` pixels."""
    if shades.shape[1] not in (1, 3):
        shades = shades.flatten(0, 1).unsqueeze(1)
    grow = max(1, math.ceil(min_side / max(shades.shape[2:])))
    cells = shades.repeat_interleave(grow, 2).repeat_interleave(grow, 3)
    return image_grid(cells, columns=math.ceil(math.sqrt(len(cells))), pad=1, pad_value=1.0)


def _saturation_threshold(act: nn.Module) -> float | None:
    return next((t for k, t in SATURATION_THRESHOLDS.items() if isinstance(act, k)), None)


class Diagnostics(L.Callback):
    """Measure whether the autoencoder learns or collapses; keep a history for the verdict."""

    def __init__(
        self,
        every_n_epochs: int = 1,
        probe_size: int = 1000,
        shrink_fraction: float = 0.1,
        sample_every: int = 10,
        histograms: bool = True,
        filters: bool = True,
        thresholds: Mapping[str, float] | None = None,
    ) -> None:
        for key, value in (("every_n_epochs", every_n_epochs), ("sample_every", sample_every)):
            if not (isinstance(value, int) and value >= 1):
                raise ConfigError(f"callbacks.diagnostics.{key}={value} must be an integer >= 1.")
        self.sample_every = sample_every
        self.every_n_epochs, self.probe_size = int(every_n_epochs), int(probe_size)
        self.shrink_fraction, self.histograms, self.filters = shrink_fraction, histograms, filters
        self.thresholds = verdicts.Thresholds.from_mapping(thresholds)
        self.history: dict[str, list[float]] = {}
        self.layers: dict[str, str] = {}  # h<i> -> module path, for the doctor
        self.preflight: dict[str, Any] | None = None  # the module's check before training
        self.w0: list[torch.Tensor] | None = None
        self._measured_step = -1  # trainer.global_step of the last measurement
        self._reset_accumulators()

    # ------------------------------------------------------------ state (kept on resume)

    def state_dict(self) -> dict[str, Any]:
        return {"history": self.history, "w0": self.w0, "measured_step": self._measured_step}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.history = {k: list(v) for k, v in state["history"].items()}
        self.w0 = state["w0"]
        self._measured_step = state.get("measured_step", -1)

    # ------------------------------------------------------------ per step: no host sync

    def _reset_accumulators(self) -> None:
        self._grad_sum: torch.Tensor | None = None  # (layers,) sums of ||dL/dW<i>||
        self._update_sum: torch.Tensor | None = None  # (layers,) sums of update ratios
        self._split_sum: torch.Tensor | None = None  # (data, penalty) gradient norms at W1
        self._prev: list[torch.Tensor] | None = None
        self._grad_steps = self._update_steps = 0
        self._window = -1  # trainer.global_step // sample_every at the last sample
        self._stepped = False

    def samples(self, global_step: int) -> bool:
        """Whether the optimiser step at `global_step` is sampled: the first step of its window
        of `sample_every` (the first call per window says so, and marks the window taken)."""
        window = global_step // self.sample_every
        if window == self._window:
            return False
        self._window = window
        return True

    def add_gradient_sample(self, norms: torch.Tensor, split: torch.Tensor | None) -> None:
        """One sampled step's ||dL/dW<i>|| (layers,) and (data, penalty) norms at W1 (2,)."""
        self._grad_sum = norms if self._grad_sum is None else self._grad_sum + norms
        if split is not None:
            self._split_sum = split if self._split_sum is None else self._split_sum + split
        self._grad_steps += 1

    def add_update_sample(self, ratios: torch.Tensor) -> None:
        """One sampled step's realised update ratios (layers,)."""
        self._update_sum = ratios if self._update_sum is None else self._update_sum + ratios
        self._update_steps += 1

    def net_of(self, pl_module: L.LightningModule) -> nn.Module:
        """The autoencoder measured: aelab's module's `net` (aelab.doctor.Doctor: any)."""
        if not hasattr(pl_module, "net"):
            raise AttributeError(
                f"Diagnostics measures aelab's own module (its `net`); for "
                f"{type(pl_module).__name__} use `from aelab import Doctor` (it needs only "
                f"`encoder` and `decoder` attributes: docs/doctor.md).")
        return pl_module.net

    def _weights(self, pl_module: L.LightningModule) -> list[torch.Tensor]:
        """Each weight layer's weights as (units, fan-in) rows (conv kernels flattened)."""
        layers = self.net_of(pl_module).weight_layers()
        return [unit_rows(layer.weight.detach(), layer) for layer in layers]

    def on_before_optimizer_step(
        self, trainer: L.Trainer, pl_module: L.LightningModule, optimizer: torch.optim.Optimizer
    ) -> None:
        self._measure_update(pl_module)  # a sampled previous step: its update is done now
        if not self.samples(trainer.global_step):  # one per `sample_every` steps, the first
            return
        layers = self.net_of(pl_module).weight_layers()
        grads = [layer.weight.grad for layer in layers]
        if any(g is None for g in grads):
            return
        self.add_gradient_sample(torch.stack(dg.frobenius_norms(grads)),
                                 gradients.split_norms(pl_module, optimizer, layers[0]))
        weights = self._weights(pl_module)  # this step's update is measured: keep W_{t-1}
        if self._prev is None:
            self._prev = [w.clone() for w in weights]
        else:
            torch._foreach_copy_(self._prev, weights)
        self._stepped = True

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, i: int
    ) -> None:
        self._measure_update(pl_module)

    def _measure_update(self, pl_module: L.LightningModule) -> None:
        """The sampled step's realised update, at the first hook after it: the next step's
        on_before_optimizer_step or, when it was a batch's last step, the batch's end."""
        if not self._stepped:
            return
        self._stepped = False
        self.add_update_sample(torch.stack(dg.update_ratios(self._weights(pl_module), self._prev)))

    # ------------------------------------------------------------ per epoch

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.w0 is None:
            self.w0 = [w.clone() for w in self._weights(pl_module)]
        self.w0 = [w.to(pl_module.device) for w in self.w0]
        self.layers = gradients.layer_names(self.net_of(pl_module))
        self.preflight = getattr(pl_module, "preflight", None)
        # fixed for the whole run: x_bar, the probe, its targets, their entropy, the blob line
        self._mean_image = self._training_mean(trainer, pl_module)
        self._probe = run_datamodule(trainer, pl_module).probe(self.probe_size)
        self._target = pl_module.normalization.decode(self._probe)
        self._entropy = dg.target_entropy(self._target)
        baseline = dg.mean_image_baseline(self._target, self._mean_image)
        self._baseline = {f"blob/mean_image/{k}": v for k, v in baseline.items()}
        self._reset_accumulators()
        if not self.history:
            self._measure(trainer, pl_module, epochs_done=0)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        loss = run_metrics(trainer, pl_module).get("train/loss")
        if loss is not None:
            self.history.setdefault("loss", []).append(float(loss))
        done = trainer.current_epoch + 1
        last = trainer.max_epochs is not None and 0 < trainer.max_epochs <= done
        if done % self.every_n_epochs == 0 or last or trainer.should_stop:
            self._measure(trainer, pl_module, epochs_done=done)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.global_step != self._measured_step:  # stopped between two measurements
            epochs = self.history.get("epoch") or [0]
            self._measure(trainer, pl_module, epochs_done=int(epochs[-1]) + 1)

    @staticmethod
    def _training_mean(trainer: L.Trainer, pl_module: L.LightningModule) -> torch.Tensor:
        """x_bar in pixel units: the mean of the decoded training split (in chunks)."""
        train = run_datamodule(trainer, pl_module).splits["train"]
        decode = pl_module.normalization.decode
        total = sum(decode(chunk).sum(0, dtype=torch.float64) for chunk in train.split(8192))
        return (total / len(train)).float().to(pl_module.device)

    def _measure(self, trainer: L.Trainer, pl_module: L.LightningModule, epochs_done: int) -> None:
        was_training = pl_module.training
        pl_module.eval()
        with torch.no_grad():
            scalars = self._scalars(pl_module)
        pl_module.train(was_training)
        self._measured_step = trainer.global_step
        values = torch.stack([v.float() for v in scalars.values()]).tolist()  # one sync
        self.history.setdefault("epoch", []).append(float(epochs_done))
        for key, value in zip(scalars, values):
            self.history.setdefault(key, []).append(value)
        writer = tensorboard(trainer, pl_module)
        if writer is not None:
            for key, value in zip(scalars, values):
                writer.add_scalar(key, value, global_step=epochs_done)
            self._log_histograms(writer, pl_module, epochs_done)
        for logger in run_loggers(trainer, pl_module):  # CSV, W&B: the epoch metrics' step
            if not isinstance(logger, TensorBoardLogger):
                logger.log_metrics(dict(zip(scalars, values)),
                                   step=max(trainer.global_step - 1, 0) if epochs_done else 0)
        if self.filters and image_loggers(trainer, pl_module):
            filters = self.net_of(pl_module).first_layer_filters()  # (units, C, h, w)
            scale = FILTER_SCALE * self.w0[0].square().mean().sqrt()
            shades = (0.5 + 0.5 * filters / scale).clamp(0, 1).nan_to_num(0.5)
            log_image(trainer, pl_module, "collapse/W1_filters", filter_grid(shades.cpu()),
                      epochs_done)

    def _scalars(self, pl_module: L.LightningModule) -> dict[str, torch.Tensor]:
        net, probe, target = self.net_of(pl_module), self._probe, self._target
        pre, post = net.trace(probe)
        pred = self.prediction(pl_module, pre[-1], post[-1])
        logits = pre[-1] if getattr(pl_module, "bce_from_logits", False) else None
        blob = dg.blob_metrics(pred, target, self._mean_image, logits, self._entropy)
        out = {f"blob/{k}": v for k, v in blob.items()} | self._baseline

        for i, (w, w0) in enumerate(zip(self._weights(pl_module), self.w0), start=1):
            out[f"collapse/norm_ratio/W{i}"] = dg.norm_ratio(w, w0)
            out[f"collapse/change/W{i}"] = dg.relative_change(w, w0)
            out[f"collapse/max_abs/W{i}"] = dg.max_abs(w)
            out[f"collapse/shrunk_units/W{i}"] = dg.shrunk_fraction(w, w0, self.shrink_fraction)
            out[f"weights/gain/W{i}"] = dg.gain(w)

        acts = net.activations()
        for i, (z, a, act) in enumerate(zip(pre, post, acts), start=1):
            name = "out" if i == len(acts) else f"h{i}"
            threshold = _saturation_threshold(act)
            if threshold is not None:
                out[f"units/saturation/{name}"] = dg.saturation_fraction(z, threshold)
            if name == "out":
                bounds = next((b for k, b in OUTPUT_BOUNDS.items() if isinstance(act, k)), None)
                if bounds is not None:
                    out["units/exact_bound/out"] = dg.exact_bound_count(a, *bounds)
                continue
            if isinstance(act, RELU_LIKE):  # a conv unit is a channel, dead at every position
                out[f"units/dead/{name}"] = dg.dead_fraction(channels_last(z))
            out[f"units/input_dependence/{name}"] = dg.input_dependence(a.flatten(1))

        out["rank/code"] = dg.effective_rank(post[net.code_layer])
        out["rank/W1"] = dg.effective_rank(self._weights(pl_module)[0])

        if net.variational:
            out |= self._latent(net, probe)

        if self._grad_sum is not None:
            for i, total in enumerate(self._grad_sum, start=1):
                out[f"grads/norm/W{i}"] = total / self._grad_steps
        if self._update_sum is not None:
            for i, total in enumerate(self._update_sum, start=1):
                out[f"grads/update_ratio/W{i}"] = total / self._update_steps
        if self._split_sum is not None:
            data, penalty = self._split_sum / self._grad_steps
            out["grads/data/W1"], out["grads/penalty/W1"] = data, penalty
        self._reset_accumulators()
        return out

    def _latent(self, net: nn.Module, probe: torch.Tensor) -> dict[str, torch.Tensor]:
        mu, logvar = net.posterior(probe)
        per_dim = elbo.kl_per_dimension(mu, logvar)
        out = {}
        if len(per_dim) <= LATENT_SCALARS:
            out = {f"latent/kl/z{i}": kl for i, kl in enumerate(per_dim, start=1)}
        self._latent_kl = per_dim
        generator = torch.Generator(mu.device).manual_seed(MI_SEED)
        out |= {
            "latent/kl_total": per_dim.sum(),
            "latent/active_units": latent.active_units(mu).float(),
            "latent/mutual_information": latent.mutual_information(mu, logvar, generator=generator),
        }
        return out

    @staticmethod
    def prediction(
        pl_module: L.LightningModule, logits: torch.Tensor, output: torch.Tensor
    ) -> torch.Tensor:
        """What `pl_module.reconstruct` returns (pixel units), from a forward pass already made."""
        return pl_module.normalization.decode(pl_module.loss_fn.prediction(logits, output))

    def _log_histograms(self, writer: Any, pl_module: L.LightningModule, step: int) -> None:
        if self.histograms:
            for i, w in enumerate(self._weights(pl_module), start=1):
                add_histogram(writer, f"collapse/weights/W{i}", w, step)
        latent_kl = getattr(self, "_latent_kl", None)
        if latent_kl is not None and len(latent_kl) > LATENT_SCALARS:
            add_histogram(writer, "latent/kl", latent_kl, step)

    # ------------------------------------------------------------ the run's verdict

    def summary(self, diverged: str | None = None) -> dict[str, Any]:
        """`verdict`, `verdict_reason`, `verdict_provisional` (why the verdict may still
        change, or None), the last measurement (`diagnostics`), the history, the names of
        the hidden layers (`diagnostics_layers`) and the check before training (`preflight`).

        `diverged`: why the run was stopped as diverged (a non-finite loss caught before it
        reached the history); the verdict is then `diverged` whatever the numbers say.
        A VAE's verdict is `posterior_collapse` when its KL per image fell below
        thresholds.posterior_kl (aelab.diagnostics.verdict).
        """
        name, reason = verdicts.verdict(self.history, self.thresholds)
        if diverged:
            name, reason = "diverged", diverged
        final = {k: v[-1] for k, v in self.history.items() if v and k != "loss"}
        early = None if name in ("diverged", "unknown") else verdicts.provisional(
            self.history, self.thresholds)
        return {
            "verdict": name,
            "verdict_reason": reason,
            "verdict_provisional": early,
            "diagnostics": final,
            "diagnostics_history": self.history,
            "diagnostics_layers": self.layers,
            "preflight": self.preflight,
        }
