"""aelab's Hydra launcher `hydra/launcher=stacked` (aelab.stacked.sweep's sweeps under Hydra)."""
