"""`python -m aelab -m ... hydra/launcher=stacked hydra.launcher.stack=8`: the sweep's jobs,
composed by Hydra, trained as aelab.stacked.sweep trains them (stackable runs in groups of at most
`stack`, one process; the others one after another; `hydra.launcher.stack_conv=true` stacks
conv and VAE runs on the CPU too, where the measured rule leaves them alone). Each job's
folder, `.hydra/` and metrics.json are as under the basic launcher; aelab's SweepOutcome
callback then counts them.
A refused input (stack < 1, no run that can be stacked) prints `aelab: error:` and exits 2.
SIGTERM and SIGINT stop the sweep with one line and exit 143 and 130 (the runs still
training are recorded "interrupted"; resume=true continues them), as `python -m aelab.stacked`.
"""

import copy
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.core.utils import JobReturn, JobStatus, configure_log, setup_globals
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, open_dict, read_write

log = logging.getLogger("aelab")


# The launcher's config is conf/hydra/launcher/stacked.yaml (shipped in aelab/conf); no
# ConfigStore schema of the same name, which Hydra 1.3 would match to it with a deprecation
# warning at every launch.


class StackedLauncher(Launcher):
    def __init__(self, stack: Any = 8, stack_conv: Any = None) -> None:
        self.stack, self.stack_conv = stack, stack_conv
        self.config: DictConfig | None = None
        self.hydra_context: HydraContext | None = None
        self.task_function: TaskFunction | None = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction,
              config: DictConfig) -> None:
        self.config, self.hydra_context, self.task_function = config, hydra_context, task_function

    def _job_config(self, overrides: Sequence[str], num: int) -> DictConfig:
        """The job's config with its hydra.runtime.output_dir, as Hydra's run_job sets it."""
        assert self.hydra_context is not None and self.config is not None
        config = self.hydra_context.config_loader.load_sweep_config(self.config, list(overrides))
        with open_dict(config):
            config.hydra.job.id = num
            config.hydra.job.num = num
        HydraConfig.instance().set_config(config)
        out_dir = os.path.join(str(config.hydra.sweep.dir), str(config.hydra.sweep.subdir))
        with read_write(config.hydra.runtime), open_dict(config.hydra.runtime):
            config.hydra.runtime.output_dir = os.path.abspath(out_dir)
        return config

    def launch(self, job_overrides: Sequence[Sequence[str]],
               initial_job_idx: int) -> Sequence[JobReturn]:
        from aelab.errors import Interrupted, stop_on_sigterm
        from aelab.stacked.sweep import interrupted_exit

        try:
            with stop_on_sigterm():
                return self._launch(job_overrides, initial_job_idx)
        except (KeyboardInterrupt, Interrupted) as exc:  # no traceback: one line, 130 / 143
            raise interrupted_exit(exc) from None

    def _launch(self, job_overrides: Sequence[Sequence[str]],
                initial_job_idx: int) -> Sequence[JobReturn]:
        from aelab.errors import AelabError
        from aelab.stacked.sweep import Sweep, train_sweep
        from aelab.training.folder import read_metrics
        from aelab.training.loggers import swept_keys

        setup_globals()
        assert self.config is not None
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        sweep_dir.mkdir(parents=True, exist_ok=True)
        jobs, hydra_cfgs, configs = [], {}, []
        for i, overrides in enumerate(job_overrides):
            config = self._job_config(overrides, initial_job_idx + i)
            task_cfg = copy.deepcopy(config)
            with read_write(task_cfg), open_dict(task_cfg):
                del task_cfg["hydra"]
                task_cfg.paths.output_dir = str(config.hydra.runtime.output_dir)
            out_dir = str(task_cfg.paths.output_dir)
            hydra_cfgs[out_dir] = config
            configs.append(config)
            jobs.append((task_cfg, dict(config.hydra.runtime.choices),
                         list(config.hydra.overrides.task)))
        swept = swept_keys() if configs else set()
        if swept is None:  # multirun.yaml unreadable: the keys whose values differ
            lines = [set(o for o in job) for job in job_overrides]
            swept = {o.partition("=")[0].lstrip("+") for o in set().union(*lines)
                     if not all(o in line for line in lines)}
        try:
            train_sweep(Sweep(sweep_dir, jobs, swept), self.stack, hydra_cfgs, self.stack_conv)
        except AelabError as exc:
            print(f"aelab: error: {exc}", file=sys.stderr)
            raise SystemExit(2) from exc
        returns = []
        for (task_cfg, _, overrides), config in zip(jobs, configs):
            ret = JobReturn()
            ret.cfg, ret.hydra_cfg, ret.overrides = task_cfg, config, overrides
            ret.working_dir, ret.task_name = os.getcwd(), str(config.hydra.job.name)
            result = read_metrics(Path(task_cfg.paths.output_dir)) or {}
            ret.return_value = (result.get("test") or {}).get("mse")
            ret.status = JobStatus.COMPLETED
            returns.append(ret)
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        return returns
