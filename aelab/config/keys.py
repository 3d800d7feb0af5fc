"""Refuse config keys that no part of aelab reads (a typo added with `+`), before any work.

Known keys: the top-level keys of conf/config.yaml, the keys of every shipped option of
each group, and for a node with a `_target_` the parameters of that class or function
(`trainer.*`: those of `lightning.Trainer`). A top-level `notes:` node is never checked:
`+notes.reason=...` keeps the user's own notes with the run.
"""

from __future__ import annotations

import difflib
import inspect
from functools import cache
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from aelab.config import CONFIG_DIR
from aelab.errors import ConfigError

CONF = Path(CONFIG_DIR)
NOTES = "notes"
HYDRA_KEYS = {"_target_", "_partial_", "_recursive_", "_convert_", "_args_"}
GROUPS = ("data", "normalization", "model", "activation", "loss", "init", "optimizer", "scheduler",
          "trainer", "logger", "callbacks", "paths")


@cache
def _shipped(group: str) -> frozenset[str]:
    """The keys of every shipped option of `group` ("": conf/config.yaml's top level)."""
    if not group:
        top = OmegaConf.load(CONF / "config.yaml")
        return frozenset({*top.keys(), *GROUPS, NOTES} - {"defaults"})
    keys: set[str] = set()
    folder, _, name = group.partition(".")  # "callbacks.NAME": that callback's node
    for path in (CONF / folder).glob("*.yaml"):
        node = OmegaConf.load(path)
        node = node.get(name) if name and isinstance(node, DictConfig) else node
        if isinstance(node, DictConfig):
            keys |= {str(k) for k in node} - {"defaults"}
    return frozenset(keys)


@cache
def _parameters(target: str) -> frozenset[str] | None:
    """The parameter names of `target` (a class: its __init__), or None when it takes **kwargs."""
    from hydra.utils import get_object

    try:
        params = inspect.signature(get_object(target)).parameters.values()
    except Exception:  # not importable: instantiate will say what is wrong
        return None
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
        return None
    return frozenset(p.name for p in params if p.kind is not inspect.Parameter.VAR_POSITIONAL)


def _refuse(key: str, known: frozenset[str], prefix: str) -> None:
    close = difflib.get_close_matches(key, sorted(known), n=1, cutoff=0.6)
    hint = f" (did you mean {prefix}{close[0]}?)" if close else ""
    raise ConfigError(
        f"{prefix}{key} is not read by any part of aelab{hint}. Remove it, or keep your own "
        f"notes under {NOTES} (e.g. +{NOTES}.reason=...)."
    )


def _check_node(node: Any, prefix: str, known: frozenset[str], target: str | None) -> None:
    """Refuse the keys of `node` outside `known` and its `_target_`'s parameters.

    The target is imported only when a key is not already known (the shipped keys need no torch).
    """
    if not isinstance(node, DictConfig):
        return
    target = node.get("_target_", target)
    unknown = [str(k) for k in node if str(k) not in known]
    if not unknown:
        return
    if target is not None:
        params = _parameters(str(target))
        if params is None:  # takes **kwargs: anything may be read
            return
        known = known | (params - {"self"}) | HYDRA_KEYS
    for key in unknown:
        if key not in known:
            _refuse(key, known, prefix)


def check_keys(cfg: DictConfig) -> None:
    """Raise ConfigError naming the closest known key for a key nothing in aelab reads."""
    for key in cfg:
        if str(key) not in _shipped(""):
            _refuse(str(key), _shipped(""), "")
    for group in GROUPS:
        node = cfg.get(group)
        if group == "callbacks":
            for name, callback in (node or {}).items():
                _check_node(callback, f"callbacks.{name}.", _shipped(f"callbacks.{name}"), None)
        else:
            trainer = "lightning.Trainer" if group == "trainer" else None
            _check_node(node, f"{group}.", _shipped(group), trainer)
