"""Stacked sweeps: many runs trained as one batched model (`hydra/launcher=stacked`)."""
