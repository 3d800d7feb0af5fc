"""aelab's Hydra launcher `hydra/launcher=stacked` (aelab.stacked's sweeps under Hydra)."""
