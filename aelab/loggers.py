"""Lightning's TensorBoard logger, with HParams sessions that compare the runs of a sweep.

TensorBoard opened on a multirun folder builds its HParams tab from one run's experiment
summary (each run writes one) and shows, by default, five hyperparameters: those marked
`differs` first, then by name. Lightning marks none, so a loss x activation sweep showed
`activation, data, data.batch_size, data.name, hydra` and hid `loss`. This logger adds
every key the run's Hydra overrides set (e.g. `init.std` even when it is not among the
usual hyperparameters) and marks `differs` the keys its sweep varies (read from the sweep's
multirun.yaml; all overridden keys when that cannot be read), so the tab opens on the axes
of the sweep.
"""

from __future__ import annotations

from argparse import Namespace
from pathlib import Path
from typing import Any

import yaml
from lightning.fabric.utilities.logger import _convert_params, _flatten_dict
from lightning.fabric.utilities.rank_zero import rank_zero_only
from lightning.pytorch.loggers import TensorBoardLogger as LightningTensorBoardLogger

IGNORED_KEYS = ("resume", "sweep")


def override_params(lines: list[str]) -> dict[str, Any]:
    """`["loss=bce", "+init.std=0.1"]` -> `{"loss": "bce", "init.std": 0.1}` (YAML-typed values;
    lists as text), without `resume`, `sweep`, `hydra.*` and deletions."""
    out: dict[str, Any] = {}
    for line in lines:
        key, sep, text = str(line).partition("=")
        if not sep or key.startswith("~"):
            continue
        key = key.lstrip("+")
        if key in IGNORED_KEYS or key.startswith("hydra."):
            continue
        try:
            value = yaml.safe_load(text)
        except yaml.YAMLError:
            value = text
        out[key] = value if isinstance(value, (bool, int, float, str)) else text
    return out


def hydra_overrides() -> list[str]:
    """The task overrides of the running Hydra job (empty outside Hydra)."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return []
    return list(HydraConfig.get().overrides.task)


def swept_keys() -> set[str] | None:
    """The keys the running multirun sweeps (comma lists, ranges, choice(...) in its command
    line or its sweep file's `hydra.sweeper.params`); None outside a multirun or when its
    multirun.yaml cannot be read."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.types import RunMode
    from omegaconf import OmegaConf

    if not HydraConfig.initialized() or HydraConfig.get().mode != RunMode.MULTIRUN:
        return None
    hydra_cfg = HydraConfig.get()
    try:
        sweep = OmegaConf.load(Path(hydra_cfg.runtime.cwd) / hydra_cfg.sweep.dir / "multirun.yaml")
        params = sweep.hydra.sweeper.get("params") or {}
        lines = [*sweep.hydra.overrides.task, *(f"{k}={v}" for k, v in params.items())]
        parsed = OverridesParser.create().parse_overrides(lines)
    except Exception:  # another sweeper's layout, a file being rewritten: mark all overrides
        return None
    return {o.key_or_group for o in parsed if o.is_sweep_override()}


def mark_differs(experiment_summary: Any, names: set[str]) -> None:
    """Set `differs` on the hparam infos of an HParams experiment summary, in place."""
    from tensorboard.plugins.hparams import plugin_data_pb2

    for value in experiment_summary.value:
        content = value.metadata.plugin_data.content
        data = plugin_data_pb2.HParamsPluginData.FromString(content)
        if not data.HasField("experiment"):
            continue
        for info in data.experiment.hparam_infos:
            info.differs = info.name in names
        value.metadata.plugin_data.content = data.SerializeToString()


class TensorBoardLogger(LightningTensorBoardLogger):
    """`log_hyperparams(params, metrics)` writes an HParams session whose swept keys are marked
    (see the module's docstring); without metrics it is Lightning's."""

    @rank_zero_only
    def log_hyperparams(
        self,
        params: dict[str, Any] | Namespace,
        metrics: dict[str, Any] | None = None,
        step: int | None = None,
    ) -> None:
        swept = override_params(hydra_overrides())
        params = {**swept, **_convert_params(params)}
        if metrics is not None and not isinstance(metrics, dict):
            metrics = {"hp_metric": metrics}
        if not metrics:
            super().log_hyperparams(params, metrics, step)
            return
        from torch.utils.tensorboard.summary import hparams

        self.hparams.update(params)
        params = self._sanitize_params(_flatten_dict(params))
        self.log_metrics(metrics, step)
        experiment, start, end = hparams(params, metrics)
        varied = swept_keys()
        mark_differs(experiment, set(swept) if varied is None else varied)
        writer = self.experiment._get_file_writer()
        for summary in (experiment, start, end):
            writer.add_summary(summary, step)
