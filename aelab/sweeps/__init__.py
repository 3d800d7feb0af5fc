"""Hydra sweep support (no torch): plan a sweep's run folders, refuse shared ones, and count
the runs' statuses at the end. Hydra callbacks are named here in conf/hydra/default.yaml."""

from aelab.sweeps.outcome import SweepOutcome, summarize_outcome, sweep_statuses
from aelab.sweeps.plan import DistinctRunFolders, check_distinct, plan_runs

__all__ = ["DistinctRunFolders", "SweepOutcome", "check_distinct", "plan_runs",
           "summarize_outcome", "sweep_statuses"]
