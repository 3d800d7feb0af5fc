"""The stacked figures of `python -m benchmarks.bench --stacked`, each a ratio measured in the
same run, against hand-written PyTorch loops over the same tensors:

- "K=k group / hand loop": aelab's group (python -m aelab.stacked's engine, in this
  process: diagnostics, logging, validation, checkpoints on) against a hand-written stacked
  loop of the same K seed MLPs (one baddbmm per layer, one Adam, lr 1e-3, the same data in
  memory, a validation pass per epoch, no logging); steady seconds per model-epoch.
- "single run / hand loop": one aelab run against the hand loop of one net.
- "K=k <net> stacked / in a row" (--stacked-nets conv vae): whole sweeps of conv or VAE runs,
  stacked with torch.func (stack_conv=true) against the same runs in a row.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

NETS = {  # --stacked-nets: the runs of a conv or VAE figure (data as the seed figure's)
    "conv": ["model=conv", "activation=relu", "loss=mse", "optimizer=adam"],
    "vae": ["model=vae", "activation=relu", "loss=bce", "optimizer=adam"],
}


def group_epochs(overrides: list[str], k: int, epochs: int) -> list[float]:
    """Per-epoch wall times of aelab's stacked group of seeds 0..k-1 (one process, this one:
    the group's Trainer timed by benchmarks.timing.EpochTimer)."""
    from aelab.stacked.group import train_group
    from aelab.stacked.sweep import plan_jobs
    from benchmarks.timing import EpochTimer

    with tempfile.TemporaryDirectory() as out:
        task = [*overrides, f"trainer.max_epochs={epochs}", "trainer.enable_progress_bar=false",
                "seed=" + ",".join(str(s) for s in range(k))]
        sweep = plan_jobs(task, [f"hydra.sweep.dir={out}/sweep"])
        timer = EpochTimer(out)
        results = train_group(sweep.jobs, sweep.swept, callbacks=[timer])
        if any(r is None or r["status"] != "completed" for r in results):
            raise SystemExit("bench: the stacked group did not complete; no figure")
        return timer.epoch_s


def hand_stacked_epochs(train: torch.Tensor, val: torch.Tensor, batch_size: int, epochs: int,
                        k: int) -> list[float]:
    """The baseline: k seed nets (784-100-50-100-784, sigmoid units) as (k, in, out) weight
    stacks, one torch.baddbmm per layer, each net its own batch order, MSE, one Adam (lr
    1e-3) over the stacks, a validation pass per epoch; nothing else."""
    from aelab.training.run import NVML_CHECK, restored_env
    from benchmarks.bench import seed_net

    torch.manual_seed(0)
    nets = [seed_net() for _ in range(k)]
    layers = [net.weight_layers() for net in nets]
    acts = nets[0].activations()
    weights = [torch.nn.Parameter(torch.stack([ls[i].weight.detach().t() for ls in layers])
                                  .contiguous().to(train.device)) for i in range(len(acts))]
    biases = [torch.nn.Parameter(torch.stack([ls[i].bias.detach() for ls in layers])
                                 .unsqueeze(1).contiguous().to(train.device))
              for i in range(len(acts))]
    opt = torch.optim.Adam([*weights, *biases], lr=1e-3)

    def forward(x: torch.Tensor) -> torch.Tensor:
        for w, b, act in zip(weights, biases, acts):
            x = act(torch.baddbmm(b, x, w))
        return x

    times = []
    with restored_env(NVML_CHECK):
        import os

        os.environ.pop(NVML_CHECK, None)
        for epoch in range(epochs):
            start = time.perf_counter()
            gens = [torch.Generator(device=train.device).manual_seed(s * 1000 + epoch)
                    for s in range(k)]
            orders = [torch.randperm(len(train), generator=g, device=train.device) for g in gens]
            for i in range(0, len(train), batch_size):
                x = torch.stack([train[o[i: i + batch_size]] for o in orders])
                loss = (forward(x) - x).square().mean((1, 2)).sum()
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
            with torch.no_grad():
                v = val.expand(k, *val.shape)
                float((forward(v) - v).square().mean())
            times.append(time.perf_counter() - start)
    return times


def steady(times: list[float]) -> float:
    """Median epoch time after the first (warm-up) epoch."""
    return statistics.median(times[1:] if len(times) > 1 else times)


def bench_group_vs_hand(where: list[str], epochs: int, repeat: int, ks: list[int],
                        accelerator: str, device: torch.device) -> None:
    """aelab's group vs the hand stacked loop per model-epoch, and a single aelab run vs the
    hand loop of one net, on the same data (aelab's own splits, on `device`)."""
    from aelab.config import compose_config
    from aelab.training.build import build
    from benchmarks.bench import (
        SEED_NET,
        aelab_epochs,
        hand_loop_epochs,
        interleaved,
        report,
    )

    common = [*SEED_NET, *where, "data.batch_size=128", f"trainer.accelerator={accelerator}"]
    with tempfile.TemporaryDirectory() as out:
        data = build(compose_config(common, Path(out))).data
    train, val = data.splits["train"].to(device), data.splits["val"].to(device)
    single, hand = interleaved(lambda: steady(aelab_epochs(common, epochs)),
                               lambda: steady(hand_loop_epochs(train, val, 128, epochs)), repeat)
    report("single run / hand loop, epoch", single, hand, "aelab", "hand loop", "<= 1.10x")
    for k in ks:
        group, hand = interleaved(
            lambda k=k: steady(group_epochs(common, k, epochs)) / k,
            lambda k=k: steady(hand_stacked_epochs(train, val, 128, epochs, k)) / k, repeat)
        report(f"K={k} group / hand loop, s/model-epoch", group, hand, "aelab group",
               "hand stacked loop", "<= 1.15x" if k == 8 else "")


def bench_nets(where: list[str], epochs: int, repeat: int, ks: list[int], nets: list[str],
               accelerator: str) -> None:
    """Whole sweeps of conv or VAE runs (--stacked-nets): stacked with torch.func
    (stack_conv=true) vs in a row, seconds per model-epoch, the same results."""
    from benchmarks.bench import RUN_AELAB, RUN_STACKED, interleaved, per_model_epoch, report

    for name in nets:
        common = [*NETS[name], *where, "data.batch_size=128", f"trainer.max_epochs={epochs}",
                  "trainer.enable_progress_bar=false", f"trainer.accelerator={accelerator}"]
        for k in ks:
            grid = [*common, "seed=" + ",".join(str(s) for s in range(k))]
            runs = k * epochs
            mine: dict[str, Any] = {}
            theirs: dict[str, Any] = {}
            args = [*grid, f"stack={k}", "stack_conv=true"]
            stacked, in_row = interleaved(
                lambda g=args, r=runs, m=mine: per_model_epoch(RUN_STACKED, g, r, m),
                lambda g=grid, r=runs, t=theirs: per_model_epoch(RUN_AELAB, ["-m", *g], r, t),
                repeat)
            report(f"K={k} {name} stacked / in a row, s/m-e", stacked, in_row, "stacked",
                   "in a row")
            same = max(abs(mine[f] - theirs[f]) / abs(theirs[f]) for f in theirs) \
                if set(mine) == set(theirs) else float("inf")
            print(f"  same work: {len(theirs)} {name} runs x {epochs} epochs each side, final "
                  f"val/mse max relative difference {same:.2e}", flush=True)
