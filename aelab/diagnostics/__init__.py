"""Measure a run: pure blob, weight-collapse and latent metrics, the verdict (the symptom),
image helpers, and the callback that computes and logs them every epoch."""
