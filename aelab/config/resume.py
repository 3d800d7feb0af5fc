"""Resume checks: a run folder's checkpoint must come from the same configuration.

`last.ckpt` is read with `weights_only=True` (no code from the file runs) and must come from
the same configuration, up to the keys in `RESUMABLE_KEYS`. Only `read_checkpoint` imports
torch (when it is called).
"""

from __future__ import annotations

import json
import shlex
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from aelab.config.compose import plain_without
from aelab.errors import CheckpointError, ConfigError

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
