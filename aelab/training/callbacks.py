"""Lightning callbacks: reconstruction images, an atomic last checkpoint, the metric history,
the divergence guard, the run record kept in checkpoints and the progress display: a bar
counting steps on a terminal, ending each epoch with its line; one line per epoch elsewhere
(a file, a SLURM log)."""

from __future__ import annotations

import math
import os
import sys
import time
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Checkpoint, ProgressBar, TQDMProgressBar
from lightning.pytorch.loggers import TensorBoardLogger, WandbLogger

from aelab.diagnostics.images import add_png_image, image_pixels, tile
from aelab.errors import Diverged
from aelab.training.runstate import run_datamodule, run_loggers, run_metrics


def tensorboard(trainer: L.Trainer, pl_module: L.LightningModule | None = None):
    """The run's TensorBoard SummaryWriter, or None when TensorBoard logging is off (the
    loggers of `pl_module`'s run in a stacked group: aelab.training.runstate)."""
    for logger in run_loggers(trainer, pl_module):
        if isinstance(logger, TensorBoardLogger):
            return logger.experiment
    return None


def image_loggers(trainer: L.Trainer, pl_module: L.LightningModule | None = None) -> list[Any]:
    """The run's loggers that hold images: TensorBoard's and Weights & Biases'."""
    return [lg for lg in run_loggers(trainer, pl_module)
            if isinstance(lg, (TensorBoardLogger, WandbLogger))]


def log_image(trainer: L.Trainer, pl_module: L.LightningModule | None, tag: str,
              image: torch.Tensor, step: int) -> None:
    """An image in [0, 1], (H, W) or (C, H, W), on every logger of the run that holds images:
    TensorBoard at `step` (epochs), Weights & Biases at the trainer's global step (its x
    axis); skipped for the others (CSV, ...)."""
    for logger in image_loggers(trainer, pl_module):
        if isinstance(logger, TensorBoardLogger):
            add_png_image(logger.experiment, tag, image, step)
        else:
            logger.log_image(key=tag, images=[image_pixels(image)], step=trainer.global_step)


PRIOR_SEED = 0  # the fixed z ~ N(0, I) of samples/prior, the same in every run
LATENT_GRID = 11  # samples/latent_grid: 11 x 11 points of [-2, 2]^2


def decoded_mean(pl_module: L.LightningModule, z: torch.Tensor) -> torch.Tensor:
    """The decoder's mean (the loss's prediction, e.g. the continuous Bernoulli's mean) at
    codes z, in [0, 1] pixel units, flat (N, C*H*W)."""
    return pl_module.decode(z).flatten(1)


class ReconstructionGrid(L.Callback):
    """Each validation epoch: the first `n_images` validation inputs above their reconstructions
    (an RGB image for colour data).

    A VAE's reconstructions decode the posterior mean; it also gets `samples/prior`, the
    decoder's mean at `n_images` codes z ~ N(0, I) drawn once (a fixed generator, so every
    epoch and every run shows the same z), and, for a 2-d code, `samples/latent_grid`, the
    decoder's mean over an 11 x 11 grid of [-2, 2]^2 (z1 across, z2 down).
    """

    def __init__(self, n_images: int = 16) -> None:
        self.n_images = n_images

    def _samples(self, trainer: L.Trainer, pl_module: L.LightningModule, shape,
                 step: int) -> None:
        net = pl_module.net
        d = net.code_dim
        z = torch.randn(self.n_images, d, generator=torch.Generator().manual_seed(PRIOR_SEED))
        with torch.no_grad():
            prior = decoded_mean(pl_module, z.to(pl_module.device))
        columns = math.ceil(math.sqrt(len(prior)))
        log_image(trainer, pl_module, "samples/prior",
                  tile(prior.clamp(0, 1).cpu(), columns=columns, shape=shape), step)
        if d == 2:
            axis = torch.linspace(-2, 2, LATENT_GRID)
            z2, z1 = torch.meshgrid(axis, axis, indexing="ij")
            grid_z = torch.stack([z1.flatten(), z2.flatten()], 1).to(pl_module.device)
            with torch.no_grad():
                images = decoded_mean(pl_module, grid_z)
            log_image(trainer, pl_module, "samples/latent_grid",
                      tile(images.clamp(0, 1).cpu(), columns=LATENT_GRID, shape=shape), step)

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not image_loggers(trainer, pl_module) or trainer.sanity_checking:
            return
        data = run_datamodule(trainer, pl_module)
        x = data.probe(self.n_images)
        y = pl_module.reconstruct(x, normalized=True)
        x = pl_module.normalization.decode(x)
        shape = getattr(data, "image_shape", None)  # (C, H, W): grey or colour
        grid = tile(torch.cat([x, y]).clamp(0, 1).cpu(), columns=len(x), shape=shape)
        # step: epochs completed (1 after the first), as the diagnostics images
        log_image(trainer, pl_module, "reconstructions", grid, trainer.current_epoch + 1)
        if getattr(pl_module.net, "variational", False):
            self._samples(trainer, pl_module, shape, trainer.current_epoch + 1)


def fsync_file(path: Path) -> None:
    """Flush a file's data to disk (so a rename over the old file survives a power loss)."""
    with open(path, "rb") as f:
        os.fsync(f.fileno())


def fsync_dir(path: Path) -> None:
    """Flush a folder's entries (the rename itself) to disk, where folders can be opened."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # pragma: no cover - Windows
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class LastCheckpoint(Checkpoint):
    """Write `last.ckpt` in the run folder at the end of every epoch, atomically.

    The checkpoint is written to a temporary file, flushed to disk and renamed over
    the old one, so a kill (or power loss) during the save leaves the previous
    checkpoint intact. Being a `Checkpoint`, Lightning orders it after every other
    callback, so the checkpoint holds their end-of-epoch state (the metric history,
    the divergence check) and Lightning adds no checkpoint of its own.
    """

    def __init__(self, dirpath: str, filename: str = "last.ckpt") -> None:
        self.path = Path(dirpath) / filename

    def save(self, trainer: L.Trainer) -> None:
        tmp = self.path.with_name(self.path.name + ".tmp")
        # Lightning's save swallows a PermissionError (the file is then just missing): open
        # the file first, so that a folder made read-only stops the run with the real cause
        open(tmp, "wb").close()  # noqa: SIM115
        trainer.save_checkpoint(tmp)
        fsync_file(tmp)
        os.replace(tmp, self.path)
        fsync_dir(self.path.parent)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.save(trainer)


class MetricHistory(L.Callback):
    """Collect the epoch-level metrics (one sync per epoch) for metrics.json."""

    def __init__(self) -> None:
        self.history: dict[str, list[float]] = {}

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        for key, value in run_metrics(trainer, pl_module).items():
            if not key.endswith(("_step", "_epoch")) and key not in ("step", "epoch"):
                self.history.setdefault(key, []).append(float(value))

    def state_dict(self) -> dict[str, Any]:
        return {"history": {k: list(v) for k, v in self.history.items()}}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.history = {k: list(v) for k, v in state_dict.get("history", {}).items()}


class RunRecord(L.Callback):
    """Keeps, in every checkpoint, the config that produced it and the command-line overrides
    (plain values, so checkpoints load with weights_only=True); notes how fit ended."""

    def __init__(self, config: dict[str, Any], overrides: list[str]) -> None:
        self.config, self.overrides = config, list(overrides)
        self.exception: BaseException | None = None
        self.resumed_from_epoch: int | None = None

    def state_dict(self) -> dict[str, Any]:
        return {"config": self.config, "overrides": self.overrides}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.resumed_from_epoch = None  # set in on_train_start, once the loops are restored

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.ckpt_path:
            self.resumed_from_epoch = trainer.current_epoch

    def on_exception(
        self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException
    ) -> None:
        self.exception = exception


class FiniteGuard(L.Callback):
    """Stop training at the first non-finite loss.

    The losses of each training batch's steps (`steps_per_call`, returned by the module's
    training_step) are tested together after it: one host sync per batch. The run stops
    there, naming the first non-finite step. Before validation and at each epoch end, before
    the checkpoint is written, the weights (and the epoch's metrics) are tested too, so
    `last.ckpt` never holds NaN weights (a finite loss can still give an infinite gradient).
    Raises `Diverged` with the epoch, the step and `advice` (likely causes).
    """

    def __init__(self, advice: list[str] | None = None) -> None:
        self.advice = list(advice or [])
        self._epoch_start = 0  # trainer.global_step when the epoch began

    def _diverged(self, trainer: L.Trainer, what: str, global_step: int | None = None) -> Diverged:
        epoch = trainer.current_epoch
        global_step = trainer.global_step if global_step is None else global_step
        step = global_step - self._epoch_start
        causes = "".join(f"\n  - {c}" for c in self.advice)
        max_epochs = getattr(trainer, "max_epochs", None)
        total = f"/{max_epochs}" if (max_epochs or 0) > 0 else ""
        message = (  # epochs counted from 1, as the progress line counts them
            f"training diverged: {what} in epoch {epoch + 1}{total}, step {step} of the epoch "
            f"(global step {global_step}); the run stopped there."
        )
        if causes:
            message += f" Likely causes for this configuration:{causes}"
        return Diverged(message, epoch, step, global_step, what)

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._epoch_start = trainer.global_step

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, i: int
    ) -> None:
        losses = outputs.get("objectives") if isinstance(outputs, dict) else None
        if losses is None or bool(torch.isfinite(losses).all()):
            return
        first = int((~torch.isfinite(losses)).nonzero()[0, 0])
        steps = outputs.get("steps")  # the global step of each batch (several: accumulation)
        step = steps[first] if steps else trainer.global_step - len(losses) + first
        raise self._diverged(trainer, f"the training loss became {float(losses[first])}", step)

    def _check_weights(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        finite = torch.stack([p.detach().isfinite().all() for p in pl_module.parameters()])
        if not bool(finite.all()):
            raise self._diverged(trainer, "the weights became non-finite")

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # before validation, whose metrics (BCE from probabilities) would fail on NaN outputs
        if trainer.state.fn == "fit" and not trainer.sanity_checking:
            self._check_weights(trainer, pl_module)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._check_weights(trainer, pl_module)
        for key, value in run_metrics(trainer, pl_module).items():
            if key.startswith(("val/", "train/")) and not bool(torch.isfinite(value).all()):
                raise self._diverged(trainer, f"{key} became {float(value)}")


def epoch_line(trainer: L.Trainer, seconds: float, steps: int) -> str:
    """The epoch's line: epoch, train/loss, val/mse (a VAE: val/elbo), epoch time, steps/s."""
    metrics = trainer.callback_metrics
    total = f"/{trainer.max_epochs}" if (trainer.max_epochs or 0) > 0 else ""
    parts = [f"epoch {trainer.current_epoch + 1}{total}"]
    parts += [f"{k} {float(metrics[k]):.5f}" for k in ("train/loss", "val/mse", "val/elbo")
              if k in metrics]
    parts += [f"{seconds:.1f} s", f"{steps / max(seconds, 1e-9):.0f} steps/s"]
    return "  ".join(parts)


FALLBACK_COLUMNS = 100  # a terminal that reports no width (0 columns): tqdm would draw nothing


class StepProgressBar(TQDMProgressBar):
    """Lightning's TQDM bar, counting optimiser steps (and steps/s) where Lightning's counts
    training batches, each of which holds `steps_per_call` steps; each epoch ends with its
    line (`epoch_line`, printed above the bar) unless `epoch_lines` is false."""

    def __init__(self, refresh_rate: int = 1, leave: bool = False,
                 epoch_lines: bool = True) -> None:
        super().__init__(refresh_rate=refresh_rate, leave=leave)
        self.epoch_lines = epoch_lines
        self._epoch_start = self._shown = 0
        self._started = 0.0

    def _sized(self, bar: Any) -> Any:
        """`bar` drawn FALLBACK_COLUMNS wide when the terminal reports a width of 0."""
        try:
            columns = os.get_terminal_size(sys.stdout.fileno()).columns
        except (OSError, ValueError, AttributeError):  # not a terminal: tqdm's own width
            columns = 1
        if columns <= 0:
            bar.dynamic_ncols, bar.ncols = False, FALLBACK_COLUMNS
        return bar

    def init_train_tqdm(self) -> Any:
        return self._sized(super().init_train_tqdm())

    def init_validation_tqdm(self) -> Any:
        return self._sized(super().init_validation_tqdm())

    def init_test_tqdm(self) -> Any:
        return self._sized(super().init_test_tqdm())

    @property
    def total_train_batches(self) -> int | float:
        steps = getattr(self.trainer.train_dataloader, "steps", None)
        if steps is None:
            return super().total_train_batches
        trainer = self.trainer
        if trainer.max_steps > 0:
            return min(steps, trainer.max_steps - trainer.global_step)
        return steps

    def on_train_epoch_start(self, trainer: L.Trainer, *args: Any) -> None:
        self._epoch_start, self._shown = trainer.global_step, 0
        self._started = time.perf_counter()
        super().on_train_epoch_start(trainer, *args)

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, i: int
    ) -> None:
        if not self.is_enabled:
            return
        bar, n = self.train_progress_bar, trainer.global_step - self._epoch_start
        if n // self.refresh_rate == self._shown // self.refresh_rate and n != bar.total:
            return  # no multiple of refresh_rate crossed since the last update
        self._shown = n
        if not bar.disable:
            bar.n = n
            bar.refresh()
        bar.set_postfix(self.get_metrics(trainer, pl_module))

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_train_epoch_end(trainer, pl_module)
        if self.epoch_lines and self.is_enabled and not trainer.sanity_checking:
            seconds = time.perf_counter() - self._started
            # above the bar (tqdm's write), which the next epoch redraws
            self.print(epoch_line(trainer, seconds, trainer.global_step - self._epoch_start))


class EpochLines(ProgressBar):
    """One line per epoch on stdout (`epoch_line`): epoch, train/loss, val/mse (a VAE:
    val/elbo), epoch time, steps/s.

    Printed at on_train_epoch_end, which Lightning 2.x calls after the epoch's validation.
    """

    def __init__(self) -> None:
        super().__init__()
        self._enabled, self._start, self._step = True, 0.0, 0

    def disable(self) -> None:
        self._enabled = False

    def enable(self) -> None:
        self._enabled = True

    @property
    def is_enabled(self) -> bool:
        return self._enabled

    def on_train_epoch_start(self, trainer: L.Trainer, *args: Any) -> None:
        self._start, self._step = time.perf_counter(), trainer.global_step

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not self._enabled or trainer.sanity_checking:
            return
        seconds = time.perf_counter() - self._start
        print(epoch_line(trainer, seconds, trainer.global_step - self._step), flush=True)


def progress_bar(refresh_rate: int = 20) -> ProgressBar:
    """StepProgressBar when stdout is a terminal, else EpochLines (no carriage-return frames)."""
    if sys.stdout.isatty():
        return StepProgressBar(refresh_rate=refresh_rate)
    return EpochLines()
