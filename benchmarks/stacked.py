"""The stacked figures of `python -m benchmarks.bench --stacked` (`bench_stacked`), each a
ratio of two times measured in the same run:

- "K=k stacked / in a row" (part sweeps): whole child sweeps, python -m aelab.stacked against
  python -m aelab -m, seconds per model-epoch, start-up and test included.
- "K=k group / hand loop": aelab's group (python -m aelab.stacked's engine, in this
  process: diagnostics, logging, validation, checkpoints on) against a hand-written stacked
  loop of the same K seed MLPs (one baddbmm per layer, one Adam, lr 1e-3, the same data in
  memory, a validation pass per epoch, no logging); steady seconds per model-epoch.
- "single run / hand loop": one aelab run against the hand loop of one net.
- "K=8 <net> step, <engine> / in a row" (part engines): seconds per training step of 8 runs
  of the seed MLP, model=conv and model=vae, stacked by baddbmm (MLPs) and by vmap against
  the same 8 one after another: the measured rule of aelab.stacked.plan.stacks_any_net.
- "K=k <net> stacked / in a row" (--stacked-nets conv vae): whole sweeps of conv or VAE runs,
  stacked with torch.func (stack_conv=true) against the same runs in a row.
"""

from __future__ import annotations

import math
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


def _steps(models: list[Any], step: Any, batches: list[list[torch.Tensor]]) -> float:
    """Seconds per step of `step(batches[i])`, the first 3 steps warm-up."""
    for x in batches[:3]:
        step(x)
    start = time.perf_counter()
    for x in batches[3:]:
        step(x)
    return (time.perf_counter() - start) / (len(batches) - 3)


def engine_step_times(overrides: list[str], k: int, steps: int,
                      device: torch.device) -> dict[str, float]:
    """Seconds per training step of k runs (seeds 0..k-1 of `overrides`, each built as its
    single run is): one after another (k optimisers), as one StackedMLP (baddbmm, MLPs
    only) and as one FuncStack (vmap over the single module's objective_terms)."""
    import lightning as L

    from aelab.config import compose_config
    from aelab.stacked.func import FuncStack
    from aelab.stacked.net import StackedMLP, is_mlp
    from aelab.training.build import build

    runs = []
    with tempfile.TemporaryDirectory() as out:
        for seed in range(k):
            L.seed_everything(seed, verbose=False)
            runs.append(build(compose_config([*overrides, f"seed={seed}"], Path(out))).module)
    train = build_data_like(runs[0], overrides).to(device)
    for run in runs:
        run.to(device)
    g = torch.Generator(device=device).manual_seed(0)
    batches = [[train[torch.randint(len(train), (128,), generator=g, device=device)]
                for _ in range(k)] for _ in range(steps + 3)]
    active = [True] * k

    def timed_stack(stack: torch.nn.Module) -> float:
        stack.to(device)
        opt = torch.optim.Adam(stack.parameters(), lr=1e-3)

        def step(xs: list[torch.Tensor]) -> None:
            objective, _ = stack.objectives(xs, active)
            opt.zero_grad(set_to_none=True)
            objective.sum().backward()
            opt.step()
        return _steps(runs, step, batches)

    opts = [torch.optim.Adam(run.parameters(), lr=1e-3) for run in runs]

    def in_a_row(xs: list[torch.Tensor]) -> None:
        for run, opt, x in zip(runs, opts, xs):
            objective, _ = run.objective_terms(x)
            opt.zero_grad(set_to_none=True)
            objective.backward()
            opt.step()

    times = {"in a row": _steps(runs, in_a_row, batches)}
    gens = [torch.Generator(device=device).manual_seed(s) for s in range(k)]
    times["vmap"] = timed_stack(FuncStack(range(k), runs, gens))
    if all(is_mlp(run.net) for run in runs):
        times["baddbmm"] = timed_stack(StackedMLP(range(k), runs))
    return times


def build_data_like(run: Any, overrides: list[str]) -> torch.Tensor:
    """The training split of the runs' data (built once)."""
    from aelab.config import compose_config
    from aelab.training.build import build

    with tempfile.TemporaryDirectory() as out:
        return build(compose_config(overrides, Path(out))).data.splits["train"]


def bench_engines(where: list[str], k: int, steps: int, repeat: int,
                  device: torch.device) -> None:
    """The measured rule behind aelab.stacked.plan.stacks_any_net and StackedMLP: per training
    step, k seed MLPs, conv and VAE runs stacked (baddbmm, vmap) against in a row."""
    from benchmarks.bench import SEED_NET, report

    for name, net in (("MLP", SEED_NET), ("conv", NETS["conv"]), ("VAE", NETS["vae"])):
        found: dict[str, list[float]] = {}
        for _ in range(repeat):
            for key, value in engine_step_times([*net, *where], k, steps, device).items():
                found.setdefault(key, []).append(value)
        t = {key: statistics.median(v) for key, v in found.items()}
        for engine in ("baddbmm", "vmap"):
            if engine in t:
                report(f"K={k} {name} step, {engine} / in a row", t[engine], t["in a row"],
                       engine, "in a row")


STACKED_PARTS = ("sweeps", "hand", "engines")


def bench_stacked(root: str, epochs: int, repeat: int, ks: list[int], data: str,
                  nets: list[str] | None = None, parts: list[str] | None = None) -> None:
    """Whole sweeps of K seeds of the seed net (batch 128, diagnostics and logging on), each a
    child process: stacked (`python -m aelab.stacked stack=K`) vs in a row (`python -m aelab
    -m`), and vs joblib with 2 workers for K = 8; seconds per model-epoch (the sweep's wall
    time, start-up and test included, / (K x epochs)). Then aelab against hand-written loops:
    the group per model-epoch vs a hand stacked loop, a single run vs
    the hand loop; per training step, 8 runs stacked by baddbmm and by vmap against in a row
    (engines: the measured rule); and conv or VAE sweeps stacked vs in a row (`nets`).
    `parts`: which of sweeps, hand, engines (default all)."""
    from benchmarks.bench import (
        RUN_AELAB,
        RUN_STACKED,
        SEED_NET,
        TINY_DATA,
        accelerator,
        device,
        interleaved,
        per_model_epoch,
        report,
    )

    where = TINY_DATA if data == "synthetic" else [f"data.root={root}"]
    common = [*SEED_NET, *where, "data.batch_size=128", f"trainer.max_epochs={epochs}",
              "trainer.enable_progress_bar=false", f"trainer.accelerator={accelerator()}"]
    parts = list(parts or STACKED_PARTS)
    for k in ks if "sweeps" in parts else []:
        grid = [*common, "seed=" + ",".join(str(s) for s in range(k))]
        runs = k * epochs
        mine: dict[str, float] = {}
        theirs: dict[str, float] = {}
        stacked, in_row = interleaved(
            lambda: per_model_epoch(RUN_STACKED, [*grid, f"stack={k}"], runs, mine),  # noqa: B023
            lambda: per_model_epoch(RUN_AELAB, ["-m", *grid], runs, theirs), repeat)  # noqa: B023
        report(f"K={k} stacked / in a row, s/model-epoch", stacked, in_row, "stacked",
               "in a row", "<= 0.71x (1.4x throughput)" if k == 8 else "")
        same = max(abs(mine[f] - theirs[f]) / abs(theirs[f]) for f in theirs) \
            if set(mine) == set(theirs) else math.inf
        print(f"  same work: {len(theirs)} runs x {epochs} epochs each side, final val/mse "
              f"max relative difference {same:.2e}", flush=True)
        if k == 8:
            joblib = per_model_epoch(RUN_AELAB, ["-m", *grid, "hydra/launcher=joblib",
                                                 "hydra.launcher.n_jobs=2"], runs)
            report("K=8 stacked / joblib 2, s/model-epoch", stacked, joblib, "stacked",
                   "joblib")
    if "hand" in parts:
        bench_group_vs_hand(where, epochs, repeat, ks, accelerator(), device())
    if "engines" in parts:
        bench_engines(where, 8, 30, repeat, device())
    if nets:
        bench_nets(where, epochs, repeat, [min(ks)], nets, accelerator())
