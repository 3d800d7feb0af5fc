"""aelab: measure why an autoencoder learns or collapses into a blob.

`from aelab import Doctor`: the diagnostics and the diagnosis as one Lightning callback for
any autoencoder (aelab.doctor.callback; imported on first use, so `import aelab` stays light).
"""

from typing import Any

__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    if name == "Doctor":
        from aelab.doctor.callback import Doctor

        return Doctor
    raise AttributeError(f"module 'aelab' has no attribute {name!r}")
