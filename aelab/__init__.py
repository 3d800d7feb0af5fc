"""aelab: measure why an autoencoder learns or collapses into a blob."""

__version__ = "0.1.0"
