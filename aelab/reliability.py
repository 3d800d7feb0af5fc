"""Run-folder safety, resume decisions, checkpoint checks and divergence advice.

Everything here but `read_checkpoint` runs before torch is imported.

- A run folder is owned by one process at a time (`RunFolderLock`, an advisory
  `flock` that the kernel drops when the process dies, even by SIGKILL).
- A folder that already holds a run (metrics.json or last.ckpt) is only reused
  with `resume=true`: a run never overwrites another's results or mixes its
  TensorBoard events with them.
- `last.ckpt` is read with `weights_only=True` (no code from the file runs) and
  must come from the same configuration, up to the keys in `RESUMABLE_KEYS`.
"""

from __future__ import annotations

import json
import logging
import os
import shlex
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from aelab.config import plain_without
from aelab.errors import CheckpointError, ConfigError, RunFolderError

log = logging.getLogger("aelab")

CHECKPOINT = "last.ckpt"
METRICS = "metrics.json"
LOCK = ".aelab.lock"
# statuses that resume=true leaves alone: the run is a result (a diverged run diverges again)
FINISHED = ("completed", "diverged")
# config keys that may differ between a run and its resumption (they do not change the numbers,
# or, for max_epochs, extend the run on purpose); everything else must match the checkpoint
RESUMABLE_KEYS = (
    "resume",
    "paths",
    "logger",
    "callbacks",
    "threads",
    "steps_per_call",
    "trainer.max_epochs",
    "trainer.accelerator",
    "trainer.devices",
    "trainer.enable_progress_bar",
    "trainer.enable_model_summary",
    "trainer.log_every_n_steps",
)


class RunFolderLock:
    """Exclusive ownership of a run folder for one process; refuses a folder in use.

    The lock file is removed on release, so a refused or finished run leaves nothing.
    Without fcntl (Windows) the lock is a no-op.
    """

    def __init__(self, folder: Path) -> None:
        self.path = folder / LOCK
        self.fd: int | None = None

    def __enter__(self) -> RunFolderLock:
        try:
            import fcntl
        except ImportError:  # pragma: no cover - not on POSIX
            return self
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            raise RunFolderError(
                f"run folder {self.path.parent} is in use by another aelab process; wait for it "
                f"to finish, or give this run its own folder (hydra.run.dir=<new folder>)."
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        self.fd = fd
        return self

    def __exit__(self, *exc: object) -> None:
        if self.fd is not None:
            self.path.unlink(missing_ok=True)
            os.close(self.fd)
            self.fd = None


def read_metrics(folder: Path) -> dict[str, Any] | None:
    """The folder's metrics.json, or None when it is missing or unreadable."""
    try:
        data = json.loads((folder / METRICS).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def finished(previous: dict[str, Any] | None, max_epochs: int | None) -> bool:
    """True when resume=true should skip the run: completed (to max_epochs) or diverged."""
    if not previous or previous.get("status") not in FINISHED:
        return False
    if previous["status"] == "completed" and max_epochs is not None:
        return int(previous.get("epochs", 0)) >= max_epochs
    return True


def refuse_used_folder(folder: Path) -> None:
    """Without resume=true, refuse a folder that holds another run's results or checkpoint."""
    held = [name for name in (METRICS, CHECKPOINT) if (folder / name).exists()]
    if held:
        raise RunFolderError(
            f"run folder {folder} already holds a run ({', '.join(held)}); nothing was changed. "
            f"Add resume=true to continue it (or skip it when completed), or give this run a "
            f"new folder (drop hydra.run.dir / hydra.sweep.dir, or pick another)."
        )


def remove_stale_events(folder: Path) -> None:
    """Delete TensorBoard event files of an earlier attempt that left no checkpoint."""
    for path in folder.glob("events.out.tfevents.*"):
        log.warning("removing %s, the events of an earlier attempt with no checkpoint", path.name)
        path.unlink()


def fingerprint(cfg: DictConfig) -> dict[str, Any]:
    """The resolved config minus RESUMABLE_KEYS, as plain values (stored in checkpoints)."""
    plain = plain_without(cfg, RESUMABLE_KEYS, resolve=True)
    return json.loads(json.dumps(plain, default=str))


def _flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(tree, dict):
        out: dict[str, Any] = {}
        for k, v in tree.items():
            out |= _flatten(v, f"{prefix}{k}.")
        return out or {prefix.rstrip("."): {}}
    return {prefix.rstrip("."): tree}


def config_differences(saved: dict[str, Any], now: dict[str, Any]) -> list[str]:
    """'key: saved -> now' for each leaf that differs."""
    a, b = _flatten(saved), _flatten(now)
    missing = object()
    return [
        f"{k}: {a.get(k, '(absent)')} in the checkpoint, {b.get(k, '(absent)')} now"
        for k in sorted(set(a) | set(b))
        if a.get(k, missing) != b.get(k, missing)
    ]


def read_checkpoint(path: Path) -> dict[str, Any]:
    """Load a checkpoint with weights_only=True; CheckpointError naming the file and the fix."""
    import pickle

    import torch

    fix = (
        f"Delete {path} to redo this run from the start (resume=true then starts afresh), or "
        f"run without resume=true in a new folder."
    )
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ""
        raise CheckpointError(
            f"{path} cannot be loaded safely: it is corrupt or holds objects other than "
            f"tensors and plain values, which weights_only loading refuses to unpickle "
            f"({first}). {fix}"
        ) from None
    except Exception as exc:  # truncated zip, bad magic number, EOF, ...
        first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ""
        raise CheckpointError(
            f"{path} is corrupt or not a checkpoint ({type(exc).__name__}: {first}). {fix}"
        ) from None
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        raise CheckpointError(f"{path} is not an aelab checkpoint (no state_dict). {fix}")
    return checkpoint


def check_checkpoint_config(
    path: Path, checkpoint: dict[str, Any], cfg: DictConfig, state_key: str
) -> None:
    """Refuse to resume a checkpoint written by another configuration, listing the differences."""
    state = checkpoint.get("callbacks", {}).get(state_key) or {}
    saved = state.get("config")
    if saved is None:
        return
    differences = config_differences(saved, fingerprint(cfg))
    if not differences:
        return
    overrides = state.get("overrides") or []
    again = " ".join(shlex.quote(o) for o in overrides if not o.startswith("resume="))
    shown = "\n  ".join(differences[:8]) + ("\n  ..." if len(differences) > 8 else "")
    raise ConfigError(
        f"resume=true: {path} was written by a run with other settings:\n  {shown}\n"
        f"Resume it with its own overrides: python -m aelab {again} resume=true "
        f"hydra.run.dir={path.parent}\n(or run these settings in a new folder, without resume)."
    )


def _target_name(node: Any) -> str:
    """The class or function name of a config node's _target_ (when no group choice is known)."""
    return str(node.get("_target_", "?") if node else "?").rsplit(".", 1)[-1]


def _fmt(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def divergence_causes(cfg: DictConfig, choices: dict[str, str] | None = None) -> list[str]:
    """Likely causes of a non-finite loss for this configuration: the specific ones (a loss
    without a clamp, a large init, a summed reduction) first, then the learning rate."""
    choices = choices or {}
    causes: list[str] = []
    loss_cfg = cfg.get("loss") or {}
    loss = choices.get("loss") or _target_name(loss_cfg)
    opt = choices.get("optimizer") or _target_name(cfg.optimizer).lower()
    eps = loss_cfg.get("eps")
    unclamped = str(loss_cfg.get("_target_", "")).endswith(".UnclampedProbabilityBCE")
    if (eps is not None and eps == 0) or unclamped:
        named = f"loss={loss}" + ("" if unclamped else " with loss.eps=0")
        causes.append(
            f"{named} takes the log of probabilities with no clamp: a sigmoid output that "
            f"rounds to 0 or 1 gives log(0) = -inf, and 0 * inf = nan. Use a clamp "
            f"(loss=bce_clamped_probs, loss.eps=1e-7), or loss=bce (from the logits, always "
            f"finite)."
        )
    lr = cfg.optimizer.get("lr")
    reduction = loss_cfg.get("reduction")
    if reduction in ("image_sum", "batch_sum"):
        pixels = "the pixels per image (784 for MNIST)"
        scale = pixels if reduction == "image_sum" else f"{pixels} x data.batch_size"
        causes.append(
            f"loss.reduction={reduction} makes the gradient {scale} times that of "
            f"reduction=mean; lower optimizer.lr by that factor, or use loss.reduction=mean."
        )
    init = choices.get("init") or _target_name(cfg.get("init")).removeprefix("init_")
    std = cfg.init.get("std") if cfg.get("init") else None
    if std is not None and std >= 0.5:
        causes.append(
            f"init={init} with init.std={_fmt(std)}: weights that large give huge "
            f"pre-activations and gradients; try init.std=0.01 or init=default."
        )
    if lr is not None:
        causes.append(
            f"optimizer={opt} with optimizer.lr={_fmt(lr)}: a step too large makes the loss "
            f"grow without bound; try optimizer.lr={_fmt(lr / 10)}."
        )
    output = cfg.model.get("output_activation")
    normalization = choices.get("normalization") or _target_name(cfg.normalization).lower()
    activation = choices.get("activation") or _target_name(cfg.activation).lower()
    if activation in ("relu", "elu", "leaky_relu", "leakyrelu", "gelu") and (
        output in ("identity", "relu") or normalization == "standard"
    ):
        causes.append(
            f"activation={activation} with an unbounded output layer "
            f"(normalization={normalization}, model.output_activation={output}): nothing "
            f"bounds the reconstruction, so one large step can make it overflow."
        )
    if loss == "gaussian_nll":
        causes.append(
            "loss=gaussian_nll learns log sigma^2: when it runs away the loss scale "
            "exp(-log sigma^2) overflows; lower optimizer.lr."
        )
    l2 = cfg.get("l2_penalty") or 0
    if lr is not None and l2 and 2 * lr * l2 >= 1:
        causes.append(
            f"l2_penalty={_fmt(l2)} with optimizer.lr={_fmt(lr)}: 2 x lr x l2_penalty >= 1, so "
            f"the weight decay step alone overshoots; lower one of them."
        )
    return causes


def describe_checkpoint(folder: Path) -> str:
    """Where the last good state is, for the divergence and interrupt messages."""
    ckpt = folder / CHECKPOINT
    if ckpt.is_file():
        return f"{ckpt} holds the last finished epoch"
    return "no epoch finished, so there is no checkpoint"

