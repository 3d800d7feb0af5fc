"""Refuse config keys that no part of aelab reads (a typo added with `+`), before any work.

Known keys: the top-level keys of conf/config.yaml, the keys of every shipped option of
each group, and for a node with a `_target_` the parameters of that class or function
(`trainer.*`: those of `lightning.Trainer`). A top-level `notes:` node is never checked:
`+notes.reason=...` keeps the user's own notes with the run.

`misspelt_override` is checked on the command line before Hydra composes: `loss.reducton=sum`
(a key no config file has, without `+`) is refused with "did you mean loss.reduction?".
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


def _paths(node: Any, prefix: str = "") -> set[str]:
    """Every dotted key path of a loaded config node (its lists and values are leaves)."""
    found = set()
    if isinstance(node, DictConfig):
        for key in node:
            path = f"{prefix}{key}"
            found.add(path)
            found |= _paths(node._get_node(key), f"{path}.")
    return found


@cache
def _config_paths() -> frozenset[str]:
    """The dotted keys that some shipped config file sets: conf/config.yaml's, each group
    option's under its group, and those of the `@package _global_` files (experiments, ...)."""
    paths = _paths(OmegaConf.load(CONF / "config.yaml"))
    paths |= {d.name for d in CONF.iterdir() if d.is_dir() and d.name != "hydra"}  # groups
    for path in CONF.rglob("*.yaml"):
        group = path.parent.relative_to(CONF).as_posix()
        if group == "." or group.startswith("hydra"):
            continue
        node = OmegaConf.load(path)
        glob = "@package _global_" in path.read_text(encoding="utf-8").split("\n", 1)[0]
        paths |= _paths(node, "" if glob else f"{group.replace('/', '.')}.")
        paths.add(group.replace("/", "."))  # the group's name (`experiment=...`)
    return frozenset(paths)


def misspelt_override(arg: str) -> str | None:
    """The refusal for a `key=value` override (no `+`) of a key that no shipped config file
    has but one is close to (`loss.reducton=sum`: did you mean loss.reduction?); else None
    (Hydra composes it, or refuses a key with no close match itself)."""
    key, sep, _ = arg.partition("=")
    if not sep or not key or key.startswith(("+", "~", "hydra")):
        return None
    known = _config_paths()
    parts = key.split(".")
    prefixes = [".".join(parts[:i]) for i in range(1, len(parts))]
    if key in known or any(p in known and not _is_node(p, known) for p in prefixes):
        return None  # a key of some config, or inside a value (an item of a list)
    for i, part in enumerate(parts):  # the first part that no config has, matched by name
        parent = ".".join(parts[:i])
        if ".".join(parts[: i + 1]) in known:
            continue
        names = sorted({p.rpartition(".")[2] for p in known if p.rpartition(".")[0] == parent})
        close = difflib.get_close_matches(part, names, n=1, cutoff=0.6)
        if not close:
            return None
        meant = ".".join([*parts[:i], close[0], *parts[i + 1:]])
        return (f"{arg}: no config has {key} (did you mean {meant}?). A key that the config "
                f"lacks is added with a +, and only if aelab reads it.")
    return None


def _is_node(path: str, known: frozenset[str]) -> bool:
    """Whether `path` holds keys of its own (a config node, not a value)."""
    return any(p.startswith(f"{path}.") for p in known)
