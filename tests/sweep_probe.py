"""A Hydra callback for tests/test_sweeps.py: after each job, write the torch thread count the
job trained with into its run folder (importable by the launcher's workers via PYTHONPATH)."""

from pathlib import Path

from hydra.experimental.callback import Callback


class ThreadProbe(Callback):
    def on_job_end(self, config, job_return, **kwargs) -> None:
        import torch

        out = Path(config.hydra.runtime.output_dir) / "torch_threads.txt"
        out.write_text(str(torch.get_num_threads()))
