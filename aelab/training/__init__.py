"""Train one run: build its objects, the LightningModule, callbacks, loggers, schedulers, the
run folder (lock, resume), and the record it leaves (metrics.json, .hydra/, HParams)."""
