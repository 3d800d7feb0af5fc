"""Read finished runs: a sweep's summary table and plots, and the figures of a study."""
