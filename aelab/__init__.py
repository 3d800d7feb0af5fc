"""aelab: measure why an autoencoder learns or collapses into a blob.

`aelab.load(run)` gives a run's trained model and `aelab.load_data(run)` its data;
`from aelab import Doctor` gives the diagnostics and the diagnosis as one Lightning callback
for any autoencoder (aelab.doctor.callback). Each imports torch only when used
(`python -m aelab --cfg job` stays light).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

__version__ = "0.1.0"


def load(path: str | Path, map_location: Any = None) -> Any:
    """The trained model (an aelab.training.module.Autoencoder, in eval mode) of the run
    folder or `last.ckpt` at `path`, single or stacked, autoencoder or VAE, on
    `map_location` (default the CPU): `model.encode(x)`, `model.reconstruct(x)`,
    `model.decode(z)`, `model.sample(n)` (a VAE) on images in [0, 1]
    (see aelab.training.inference)."""
    from aelab.training.module import Autoencoder

    return Autoencoder.load_from_checkpoint(path, map_location=map_location)


def load_data(path: str | Path, **options: Any) -> Any:
    """The data the run at `path` trained on (aelab.data.ImageData: `.splits` hold the
    normalised images, flat); `options` replace data.* settings (e.g. `root=`)."""
    from aelab.training.load import load_data as read

    return read(path, **options)


def __getattr__(name: str) -> Any:
    if name == "Doctor":
        from aelab.doctor.callback import Doctor

        return Doctor
    raise AttributeError(f"module 'aelab' has no attribute {name!r}")
