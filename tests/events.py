"""Read a run's TensorBoard events back: scalars, images, histograms and hparams."""

from __future__ import annotations

from pathlib import Path

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import plugin_data_pb2


def load_events(folder: Path) -> EventAccumulator:
    acc = EventAccumulator(str(folder), size_guidance={"scalars": 0, "images": 0, "histograms": 0,
                                                       "tensors": 0})
    acc.Reload()
    return acc


def hparams_of(acc: EventAccumulator) -> tuple[dict, list[str]]:
    """The run's hyperparameters and the metric tags of its HParams session."""
    content = acc.PluginTagToContent("hparams")
    params, metric_tags = {}, []
    for raw in content.values():
        data = plugin_data_pb2.HParamsPluginData.FromString(raw)
        if data.HasField("session_start_info"):
            for key, value in data.session_start_info.hparams.items():
                params[key] = value.WhichOneof("kind") and getattr(value, value.WhichOneof("kind"))
        if data.HasField("experiment"):
            metric_tags = [m.name.tag for m in data.experiment.metric_infos]
    return params, metric_tags


def session_status(acc: EventAccumulator) -> str:
    """The end status of the run's HParams session ("STATUS_SUCCESS", ...), "" without one."""
    from tensorboard.plugins.hparams import api_pb2

    for raw in acc.PluginTagToContent("hparams").values():
        data = plugin_data_pb2.HParamsPluginData.FromString(raw)
        if data.HasField("session_end_info"):
            return api_pb2.Status.Name(data.session_end_info.status)
    return ""
