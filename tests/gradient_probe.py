"""A callback for tests/test_trainer_options.py: record, after every optimiser step, the total
gradient norm the step used (after clipping) and the lr, into `path` as JSON."""

from __future__ import annotations

import json
from pathlib import Path

import lightning as L
import torch


class StepRecorder(L.Callback):
    def __init__(self, path: str) -> None:
        self.path, self.norms, self.lrs = Path(path), [], []

    def on_fit_start(self, trainer, pl_module) -> None:
        optimizer = trainer.optimizers[0]
        # a post-hook: the step's gradients, as clipped in on_before_optimizer_step
        optimizer.register_step_post_hook(self._record)
        optimizer.register_step_pre_hook(
            lambda opt, args, kwargs: self.lrs.append(opt.param_groups[0]["lr"]))

    def _record(self, optimizer, args, kwargs) -> None:
        grads = [p.grad for group in optimizer.param_groups for p in group["params"]
                 if p.grad is not None]
        self.norms.append(float(torch.linalg.vector_norm(torch.stack(
            [torch.linalg.vector_norm(g) for g in grads]))))

    def on_fit_end(self, trainer, pl_module) -> None:
        self.path.write_text(json.dumps({"norms": self.norms, "lrs": self.lrs}))
