"""The run's configuration: compose it, and validate it once before anything is built.
Nothing here imports torch at module level."""

from aelab.config.compose import CONFIG_DIR, compose_config, plain_without

__all__ = ["CONFIG_DIR", "compose_config", "plain_without"]
