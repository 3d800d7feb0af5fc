"""Resume checks: a run folder's checkpoint must come from the same configuration.

`last.ckpt` is read with `weights_only=True` (no code from the file runs) and must come from
the same configuration, up to the keys in `RESUMABLE_KEYS`; a finished run without a
checkpoint is compared with its `.hydra/config.yaml` instead. A mismatch raises
`ResumeMismatch` (the folder is left as it was). Only `read_checkpoint` imports torch (when
it is called).
"""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf, open_dict

from aelab.config.compose import plain_without
from aelab.errors import CheckpointError, ResumeMismatch

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


def config_differences(saved: dict[str, Any], now: dict[str, Any],
                       source: str = "the checkpoint") -> list[str]:
    """'key: X in `source`, Y now' for each leaf that differs."""
    a, b = _flatten(saved), _flatten(now)
    missing = object()
    return [
        f"{k}: {a.get(k, '(absent)')} in {source}, {b.get(k, '(absent)')} now"
        for k in sorted(set(a) | set(b))
        if a.get(k, missing) != b.get(k, missing)
    ]


# torch's boilerplate around the reason a checkpoint does not load
BOILERPLATE = ("Weights only load failed", "Please file an issue", "Check the documentation")


def load_error_reason(exc: BaseException) -> str:
    """The reason in torch's message for a failed load, in whole sentences: the paragraph
    that is not boilerplate, up to its first full stop."""
    text = str(exc).strip()
    paragraphs = [" ".join(p.split()) for p in re.split(r"\n\s*\n", text) if p.strip()]
    kept = [p for p in paragraphs if not p.startswith(BOILERPLATE)] or paragraphs
    if not kept:
        return type(exc).__name__
    sentence = re.split(r"(?<=\.)\s", kept[0], maxsplit=1)[0]
    return sentence if sentence.endswith((".", "!", "?")) else sentence + "."


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
        raise CheckpointError(
            f"{path} cannot be loaded safely: it is corrupt or holds objects other than "
            f"tensors and plain values, which weights_only loading refuses to unpickle "
            f"(torch: {load_error_reason(exc)}) {fix}"
        ) from None
    except Exception as exc:  # truncated zip, bad magic number, EOF, ...
        raise CheckpointError(
            f"{path} is corrupt or not a checkpoint ({type(exc).__name__}: "
            f"{load_error_reason(exc)}) {fix}"
        ) from None
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        raise CheckpointError(f"{path} is not an aelab checkpoint (no state_dict). {fix}")
    return checkpoint


def check_checkpoint_config(
    path: Path, checkpoint: dict[str, Any], cfg: DictConfig, state_key: str,
    status: str | None = None,
) -> None:
    """Refuse to resume (or, for a finished run of `status`, to skip) a checkpoint written by
    another configuration, listing the differences."""
    state = checkpoint.get("callbacks", {}).get(state_key) or {}
    saved = state.get("config")
    if saved is None:
        return
    differences = config_differences(saved, fingerprint(cfg))
    if differences:
        what = (f"{path.parent} holds a {status} run with other settings (its {path.name})"
                if status else f"{path} was written by a run with other settings")
        raise mismatch(what, differences, state.get("overrides") or [], path.parent)


def check_record_config(folder: Path, cfg: DictConfig, status: str) -> None:
    """Refuse to skip a finished run (`status`) that has no checkpoint when its
    `.hydra/config.yaml` records other settings (nothing to compare with: nothing refused)."""
    try:
        saved = OmegaConf.load(folder / ".hydra" / "config.yaml")
        overrides = OmegaConf.load(folder / ".hydra" / "overrides.yaml")
    except (OSError, ValueError, TypeError):
        return
    if not isinstance(saved, DictConfig):
        return
    try:
        with open_dict(saved):  # its own folder, not Hydra's runtime one, for the interpolations
            saved.paths.output_dir = str(folder)
        recorded = fingerprint(saved)
    except Exception:  # an interpolation this process cannot resolve: nothing to compare
        return
    differences = config_differences(recorded, fingerprint(cfg), "its .hydra/config.yaml")
    if differences:
        raise mismatch(f"{folder} holds a {status} run with other settings", differences,
                       [str(o) for o in overrides] if overrides else [], folder)


def mismatch(what: str, differences: list[str], overrides: list[str],
             folder: Path) -> ResumeMismatch:
    """The refusal of a resume=true run in a folder whose run has other settings."""
    again = " ".join(shlex.quote(o) for o in overrides if not o.startswith("resume="))
    shown = "\n  ".join(differences[:8]) + ("\n  ..." if len(differences) > 8 else "")
    where = shlex.quote(f"hydra.run.dir={folder}")
    return ResumeMismatch(
        f"resume=true: {what}:\n  {shown}\nNothing was changed. Resume it with its own "
        f"overrides: python -m aelab {again} resume=true {where}\n(or run these settings in a "
        f"new folder, without resume)."
    )
