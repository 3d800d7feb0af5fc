"""Lightning's TensorBoard logger, with HParams sessions that compare the runs of a sweep.

TensorBoard opened on a multirun folder builds its HParams tab from one run's experiment
summary (each run writes one) and shows, by default, five hyperparameters: those marked
`differs` first, then by name. Lightning marks none, so a loss x activation sweep showed
`activation, data, data.batch_size, data.name, hydra` and hid `loss`. This logger adds
every key the run's Hydra overrides set (e.g. `init.std` even when it is not among the
usual hyperparameters) and marks `differs` the keys its sweep varies (read from the sweep's
multirun.yaml; all overridden keys when that cannot be read), so the tab opens on the axes
of the sweep. Every run that got as far as its logger writes a session, ended with its status
(completed: success; diverged or failed: failure; interrupted: unknown). The session and its
final/ metrics go to their own events file (SESSION_SUFFIX), which a resumed run deletes
first: TensorBoard shows a run's first session, and the resumed run's is the one that counts.

TensorBoard's HParams table prints every number with 5 significant digits (a batch size of 128
as `128.00`): the integer counts of INTEGER_KEYS (batch size, epochs, seed, code size, ...)
are written as text, which the table shows as written and filters as categories.
"""

from __future__ import annotations

import time
from argparse import Namespace
from pathlib import Path
from typing import Any

import yaml
from lightning.fabric.utilities.rank_zero import rank_zero_only
from lightning.pytorch.loggers import TensorBoardLogger as LightningTensorBoardLogger

IGNORED_KEYS = ("resume", "sweep")
# keys (their last part) whose integer values are counts: shown as text in the HParams table
INTEGER_KEYS = (
    "batch_size", "eval_batch_size", "max_epochs", "max_steps", "seed", "split_seed", "code_dim",
    "train_size", "val_size", "test_size", "steps_per_call", "accumulate_grad_batches",
    "iwae_samples", "threads", "every_n_epochs", "probe_size", "log_every_n_steps", "devices",
)


def plain_params(params: dict[str, Any] | Namespace | None, prefix: str = "") -> dict[str, Any]:
    """`params` (a dict, an argparse Namespace or None) flat: nested dicts and Namespaces
    become `a/b` keys, as Lightning's loggers name them."""
    if params is None:
        return {}
    if isinstance(params, Namespace):
        params = vars(params)
    out: dict[str, Any] = {}
    for key, value in params.items():
        if isinstance(value, Namespace):
            value = vars(value)
        if isinstance(value, dict) and value:
            out |= plain_params(value, f"{prefix}{key}/")
        else:
            out[f"{prefix}{key}"] = value
    return out


def session_value(key: str, value: Any) -> bool | int | float | str | None:
    """A value for the HParams table: bools, floats and strings as they are, the integers of
    INTEGER_KEYS as text (the table would print 128 as 128.00), one-element tensors as
    numbers, anything else (a list, an enum) as text; None stays None (left out)."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, int):
        return str(value) if key.rsplit(".", 1)[-1] in INTEGER_KEYS else value
    if isinstance(value, float):
        return value
    item = getattr(value, "item", None)
    if callable(item) and getattr(value, "numel", lambda: 0)() == 1:
        return session_value(key, item())
    return str(value)


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


SESSION_SUFFIX = ".session"
ALWAYS_SHOWN = {"verdict"}  # marked `differs`, so the HParams table shows it from the start


def remove_sessions(folder: Path) -> None:
    """Delete the HParams session events of an earlier attempt (before resuming it)."""
    for path in folder.glob(f"events.out.tfevents.*{SESSION_SUFFIX}"):
        path.unlink()


# TensorBoard's hparams Status has no "aborted" (2.21: UNKNOWN, SUCCESS, FAILURE, RUNNING):
# an interrupted, resumable run ends its session as unknown
SESSION_STATUS = {
    "completed": "STATUS_SUCCESS",
    "diverged": "STATUS_FAILURE",
    "failed": "STATUS_FAILURE",
    "refused": "STATUS_FAILURE",
    "interrupted": "STATUS_UNKNOWN",
}


def session_summaries(
    params: dict[str, Any], metric_tags: list[str], differs: set[str], status: str
) -> list[Any]:
    """The experiment, session-start and session-end summaries of one HParams session: typed
    values (booleans as booleans; bool, number or str values), the metric columns
    `metric_tags`, `differs` set on the keys in `differs`, and `status` (an aelab run status,
    see SESSION_STATUS) as its end status."""
    from tensorboard.compat.proto.summary_pb2 import Summary
    from tensorboard.plugins.hparams import api_pb2, metadata
    from tensorboard.plugins.hparams import plugin_data_pb2 as pd

    def summary(tag: str, **data: Any) -> Summary:
        content = pd.HParamsPluginData(version=metadata.PLUGIN_DATA_VERSION, **data)
        meta = metadata.create_summary_metadata(content)
        return Summary(value=[Summary.Value(tag=tag, metadata=meta, tensor=metadata.NULL_TENSOR)])

    start = pd.SessionStartInfo(start_time_secs=time.time())
    infos = []
    for key, value in params.items():
        if isinstance(value, bool):
            start.hparams[key].bool_value, kind = value, api_pb2.DATA_TYPE_BOOL
        elif isinstance(value, (int, float)):
            start.hparams[key].number_value, kind = value, api_pb2.DATA_TYPE_FLOAT64
        else:
            start.hparams[key].string_value, kind = str(value), api_pb2.DATA_TYPE_STRING
        infos.append(api_pb2.HParamInfo(name=key, type=kind, differs=key in differs))
    experiment = api_pb2.Experiment(
        hparam_infos=infos,
        metric_infos=[api_pb2.MetricInfo(name=api_pb2.MetricName(tag=k)) for k in metric_tags],
    )
    end = pd.SessionEndInfo(
        status=api_pb2.Status.Value(SESSION_STATUS.get(status, "STATUS_UNKNOWN")),
        end_time_secs=time.time(),
    )
    return [
        summary(metadata.EXPERIMENT_TAG, experiment=experiment),
        summary(metadata.SESSION_START_INFO_TAG, session_start_info=start),
        summary(metadata.SESSION_END_INFO_TAG, session_end_info=end),
    ]


def _masked_crc32c(data: bytes) -> int:
    """TensorBoard's record checksum (tensorflow_stub.pywrap_tensorflow.masked_crc32c), in C."""
    import google_crc32c

    crc = google_crc32c.value(bytes(data))
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def fast_event_checksums() -> bool:
    """Checksum TensorBoard's event records with google-crc32c's C code, the same numbers.

    Written by hand because it was measured: TensorBoard's writer checksums each record in
    pure Python on its writer thread (0.1 ms a KB, holding the GIL): the W1 filter image
    alone took 11 ms a measurement, and the whole cost slowed a single MNIST epoch by 2 % and
    a group of 8 by 4 % (2-core Xeon). Returns whether the C checksum is in use."""
    try:
        import google_crc32c
        from tensorboard.summary.writer import record_writer
    except ImportError:
        return False
    if google_crc32c.implementation != "c":
        return False
    record_writer.masked_crc32c = _masked_crc32c
    return True


class TensorBoardLogger(LightningTensorBoardLogger):
    """`log_hyperparams(params, metrics, status=..., metric_tags=...)` writes an HParams session
    whose swept keys are marked, whose metric columns are `metric_tags` (default: the metrics'
    tags) and which ends with the run's status (see the module's docstring); without metrics
    (None) it is Lightning's. Its events are checksummed in C (fast_event_checksums)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        fast_event_checksums()
        super().__init__(*args, **kwargs)

    @rank_zero_only
    def log_hyperparams(
        self,
        params: dict[str, Any] | Namespace,
        metrics: dict[str, Any] | None = None,
        step: int | None = None,
        status: str = "completed",
        metric_tags: list[str] | None = None,
        overrides: list[str] | None = None,
        swept_keys_: set[str] | None = None,
    ) -> None:
        """`overrides` and `swept_keys_` stand for the running Hydra job's overrides and its
        multirun's swept keys when the run is not a Hydra job (a stacked run)."""
        swept = override_params(hydra_overrides() if overrides is None else overrides)
        params = {**swept, **plain_params(params)}
        if metrics is not None and not isinstance(metrics, dict):
            metrics = {"hp_metric": metrics}
        if metrics is None:
            super().log_hyperparams(params, metrics, step)
            return
        self.hparams.update(params)
        params = {k: session_value(k, v) for k, v in params.items()}
        params = {k: v for k, v in params.items() if v is not None}
        from torch.utils.tensorboard.summary import scalar
        from torch.utils.tensorboard.writer import FileWriter

        varied = swept_keys() if swept_keys_ is None else swept_keys_
        differs = (set(swept) if varied is None else set(varied)) | (ALWAYS_SHOWN & set(params))
        tags = list(metrics) if metric_tags is None else metric_tags
        writer = FileWriter(self.log_dir, filename_suffix=SESSION_SUFFIX)
        for tag, value in metrics.items():
            writer.add_summary(scalar(tag, float(value)), step or 0)
        for summary in session_summaries(params, tags, differs, status):
            writer.add_summary(summary, step)
        writer.close()
