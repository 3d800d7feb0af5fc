"""The doctor: why did a run fail, and what fixes it?

`preflight` checks the loss on one batch before training; `diagnose` turns a finished run's
record into its symptom and ranked causes (`causes`, one small rule each, over `view.Run`);
`treat` reruns a run with each fix; `callback.Doctor` does it all for any Lightning
autoencoder. `python -m aelab.doctor RUN_DIR [--treat]` (docs/doctor.md).
"""
