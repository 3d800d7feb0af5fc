"""Benchmarks, each a ratio of two times measured in the same run: `python -m benchmarks.bench`.

    python -m benchmarks.bench               # every figure but the sweep (~5 minutes, 2 cores)
    python -m benchmarks.bench --only epoch  # one figure
    python -m benchmarks.bench --sweep       # also the 8-run MNIST grid, sequential vs joblib,
                                             # and the bound the machine sets (2 1-thread loops)
    python -m benchmarks.bench --stacked     # only: K = 4, 8, 16 seed nets stacked
                                             # (python -m aelab.stacked) vs the same K runs in
                                             # a row, and vs joblib (K = 8); aelab's group vs
                                             # a hand stacked loop, a run vs the hand loop
    python -m benchmarks.bench --stacked --stacked-nets conv vae   # also conv / VAE groups
    python -m benchmarks.bench --device cuda ...   # on the GPU

Timed runs are repeated (--repeat) and interleaved, the two sides of a ratio alternating,
and each side's median is reported, so that a burst of load on a shared machine hits both.
No figure is asserted: the script prints them (with the CPU count, torch version and device).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from aelab.config import compose_config

FIGURES = ("epoch", "conv", "textbook", "diagnostics", "startup", "launch")
SEED_NET = ["model.hidden=[100,50]", "activation=sigmoid", "loss=mse", "optimizer=adam"]
CONV_NET = ["model=conv", "activation=relu", "loss=mse", "optimizer=adam"]  # 32-64 ch, code 32


def report(name: str, ours: float, base: float, ours_label: str, base_label: str,
           target: str = "", unit: str = "s") -> None:
    ratio = ours / base
    goal = f"   (target {target})" if target else ""
    print(f"{name:<38} {ours_label} {ours:8.3f} {unit} / {base_label} {base:8.3f} {unit}"
          f" = {ratio:5.2f}x{goal}", flush=True)


DEVICE = {"name": "auto"}  # --device


def device() -> torch.device:
    """--device: cpu, cuda, or auto (cuda when there is one)."""
    name = DEVICE["name"]
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(name)


def accelerator() -> str:
    """trainer.accelerator of the aelab runs timed against hand loops on device()."""
    return "gpu" if device().type == "cuda" else "cpu"


def aelab_epochs(overrides: list[str], epochs: int, net: list[str] = SEED_NET) -> list[float]:
    """Per-epoch wall times of a real aelab run of `net` (default callbacks and logging on)."""
    from aelab.training.run import run

    with tempfile.TemporaryDirectory() as out:
        cfg = compose_config(
            [*net, f"trainer.max_epochs={epochs}", "trainer.enable_progress_bar=false",
             f"trainer.accelerator={accelerator()}",
             "+callbacks.timer._target_=benchmarks.timing.EpochTimer",
             f"+callbacks.timer.dirpath={out}", *overrides],
            out,
        )
        run(cfg)
        return json.loads((Path(out) / "timing.json").read_text())["epoch_s"]


def seed_net() -> nn.Module:
    from aelab.models import mlp_autoencoder

    return mlp_autoencoder((1, 28, 28), [100, 50], nn.Sigmoid, "sigmoid")


def conv_net() -> nn.Module:
    """model=conv's defaults with ReLU units, built straight from the parts."""
    from aelab.models import ConvDecoder, ConvEncoder, EncoderDecoder

    shape = (1, 28, 28)
    return EncoderDecoder(ConvEncoder(shape, nn.ReLU), ConvDecoder(shape, nn.ReLU))


def hand_loop_epochs(train: torch.Tensor, val: torch.Tensor, batch_size: int,
                     epochs: int, make_net: Callable[[], nn.Module] = seed_net) -> list[float]:
    """The baseline: the same net and optimiser (Adam, lr 1e-3) in a plain PyTorch loop over
    the same tensors, with a validation pass per epoch, no framework (and, as in a process
    without Lightning, torch's plain CUDA availability check)."""
    from aelab.training.run import NVML_CHECK, restored_env

    torch.manual_seed(0)
    net = make_net().to(train.device)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    times = []
    with restored_env(NVML_CHECK):
        os.environ.pop(NVML_CHECK, None)
        for epoch in range(epochs):
            start = time.perf_counter()
            g = torch.Generator(device=train.device).manual_seed(epoch)
            order = torch.randperm(len(train), generator=g, device=train.device)
            for i in range(0, len(train), batch_size):
                x = train[order[i : i + batch_size]]
                loss = (torch.sigmoid(net(x)) - x).square().mean()
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
            with torch.no_grad():
                float((torch.sigmoid(net(val)) - val).square().mean())
            times.append(time.perf_counter() - start)
    return times


def steady(times: list[float]) -> float:
    """Median epoch time after the first (warm-up) epoch."""
    return statistics.median(times[1:] if len(times) > 1 else times)


def interleaved(ours: Callable[[], float], base: Callable[[], float],
                repeat: int) -> tuple[float, float]:
    """Medians of `repeat` alternating measurements of both sides."""
    a, b = [], []
    for _ in range(repeat):
        a.append(ours())
        b.append(base())
    return statistics.median(a), statistics.median(b)


def mnist_tensors(root: str) -> tuple[torch.Tensor, torch.Tensor]:
    from aelab.data import ImageData
    from aelab.data.normalization import Unit

    data = ImageData("mnist", Unit(), root=root).load()
    return data.splits["train"].to(device()), data.splits["val"].to(device())


def bench_epoch(root: str, epochs: int, repeat: int, batch_sizes: list[int]) -> None:
    train, val = mnist_tensors(root)
    for bs in batch_sizes:
        ours, hand = interleaved(
            lambda bs=bs: steady(
                aelab_epochs([f"data.root={root}", f"data.batch_size={bs}"], epochs)
            ),
            lambda bs=bs: steady(hand_loop_epochs(train, val, bs, epochs)),
            repeat,
        )
        report(f"epoch, batch {bs}", ours, hand, "aelab", "hand loop",
               "<= 1.15x" if bs == 128 else "")


def textbook_epoch(root: str) -> float:
    """torchvision dataset + ToTensor + DataLoader + a default Lightning Trainer, one epoch."""
    import lightning as L
    from torch.utils.data import DataLoader
    from torchvision import datasets, transforms

    from aelab.models import mlp_autoencoder

    class Plain(L.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.net = mlp_autoencoder((1, 28, 28), [100, 50], nn.Sigmoid, "sigmoid")

        def training_step(self, batch, batch_idx):
            x = batch[0].flatten(1)
            loss = (torch.sigmoid(self.net(x)) - x).square().mean()
            self.log("train_loss", loss)
            return loss

        def configure_optimizers(self):
            return torch.optim.Adam(self.parameters(), lr=1e-3)

    dataset = datasets.MNIST(root, train=True, transform=transforms.ToTensor())
    loader = DataLoader(dataset, batch_size=128, shuffle=True)
    with tempfile.TemporaryDirectory() as out:
        trainer = L.Trainer(max_epochs=1, default_root_dir=out, enable_progress_bar=False,
                            enable_model_summary=False)
        start = time.perf_counter()
        trainer.fit(Plain(), loader)
        return time.perf_counter() - start


def bench_conv(root: str, epochs: int, repeat: int) -> None:
    """model=conv (ReLU) against the same conv net in a hand loop over the same tensors."""
    train, val = mnist_tensors(root)
    ours, hand = interleaved(
        lambda: steady(aelab_epochs([f"data.root={root}"], epochs, net=CONV_NET)),
        lambda: steady(hand_loop_epochs(train, val, 128, epochs, conv_net)),
        repeat,
    )
    report("conv epoch, batch 128", ours, hand, "aelab", "hand loop", "<= 1.15x")


def bench_textbook(root: str, epochs: int, repeat: int) -> None:
    textbook, ours = interleaved(
        lambda: textbook_epoch(root),
        lambda: steady(aelab_epochs([f"data.root={root}"], epochs)),
        repeat,
    )
    report("epoch, textbook pipeline / aelab", textbook, ours, "textbook", "aelab", ">= 4x")


def bench_diagnostics(root: str, epochs: int, repeat: int) -> None:
    on, off = interleaved(
        lambda: steady(aelab_epochs([f"data.root={root}"], epochs)),
        lambda: steady(aelab_epochs([f"data.root={root}", "~callbacks.diagnostics"], epochs)),
        repeat,
    )
    report("diagnostics on / off (batch 128)", on, off, "on", "off", "<= 1.10x")


def timed_command(args: list[str], repeat: int = 3) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        subprocess.run(args, check=True, capture_output=True)
        times.append(time.perf_counter() - start)
    return min(times)


def bench_startup() -> None:
    cfg = timed_command([sys.executable, "-m", "aelab", "--cfg", "job"])
    imports = timed_command([sys.executable, "-c", "import torch, lightning"])
    report("start-up: --cfg job vs import torch", cfg, imports, "--cfg job", "import")


# Prefix of a child's Python code: at exit, write the process's own peak RSS (VmHWM, in kB)
# to the file named by AELAB_BENCH_HWM. (A child's ru_maxrss would not do: on Linux it starts
# from the forking parent's peak, here the bench process's.)
RECORD_PEAK_RSS = """
import atexit, os, runpy, sys
def hwm():
    with open("/proc/self/status") as f:
        kb = next(line.split()[1] for line in f if line.startswith("VmHWM"))
    with open(os.environ["AELAB_BENCH_HWM"], "w") as out:
        out.write(kb)
atexit.register(hwm)
"""
RUN_AELAB = 'sys.argv = ["aelab", *sys.argv[1:]]; runpy.run_module("aelab", run_name="__main__")'


def peak_rss_run(code: str, args: list[str], cwd: str) -> tuple[float, float]:
    """Run Python `code` with `args` in `cwd`; return (wall seconds, its peak RSS in MiB)."""
    hwm = Path(cwd) / "hwm.txt"
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", RECORD_PEAK_RSS + code, *args], cwd=cwd,
                          text=True, env={**os.environ, "AELAB_BENCH_HWM": str(hwm)},
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr[-2000:])
    return wall, int(hwm.read_text()) / 1024


def child_run(args: list[str], cwd: str) -> tuple[float, float]:
    """Run `python -m aelab ARGS`; return (wall seconds, peak RSS in MiB) of that process."""
    return peak_rss_run(RUN_AELAB, args, cwd)


def bench_launch_and_memory(root: str) -> None:
    with tempfile.TemporaryDirectory() as cwd:
        launched = time.time()
        wall, rss = child_run([f"data.root={root}", "trainer.max_epochs=1", "hydra.run.dir=run",
                               "+callbacks.timer._target_=benchmarks.timing.EpochTimer",
                               "+callbacks.timer.dirpath=run"], cwd)
        first = json.loads((Path(cwd) / "run" / "timing.json").read_text())["first_step_unix"]
    imports = timed_command([sys.executable, "-c", "import torch, lightning"], repeat=1)
    report("launch to first training step", first - launched, imports, "aelab", "import torch")
    dataset_mib = 70_000 * 784 * 4 / 2**20
    report("peak RSS of a 1-epoch MNIST run", rss, dataset_mib, "RSS", "float32 MNIST", unit="MiB")
    with tempfile.TemporaryDirectory() as cwd:
        _, libraries = peak_rss_run("import torch, lightning", [], cwd)
    report("  of which import torch, lightning", libraries, rss, "import", "run", unit="MiB")
    print(f"{'':<38} (whole run {wall:.1f} s)")


# A child that prints the steady hand-loop epoch at THREADS torch threads.
HAND_LOOP_CHILD = """
import sys, torch
torch.set_num_threads(int(sys.argv[1]))
from benchmarks.bench import hand_loop_epochs, mnist_tensors, steady
train, val = mnist_tensors(sys.argv[2])
print(steady(hand_loop_epochs(train, val, 128, 4)))
"""


def hand_loop_child(threads: int, root: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", HAND_LOOP_CHILD, str(threads), root],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)


def steady_of(child: subprocess.Popen) -> float:
    out, _ = child.communicate()
    if child.returncode != 0:
        raise RuntimeError(f"hand-loop child exited {child.returncode}")
    return float(out.strip().splitlines()[-1])


def bench_thread_bound(root: str) -> None:
    """What two workers can gain on the compute alone: two 1-thread hand loops side by side
    against two 2-thread hand loops one after the other (per-epoch times)."""
    side = [hand_loop_child(1, root) for _ in range(2)]
    parallel = max(steady_of(c) for c in side)
    sequential = sum(steady_of(hand_loop_child(2, root)) for _ in range(2))
    report("  bound: hand-loop epochs, 2 x 1 thread", parallel, sequential,
           "side by side", "2 x 2 threads in a row")


RUN_STACKED = ('sys.argv = ["aelab.stacked", *sys.argv[1:]]; '
               'runpy.run_module("aelab.stacked", run_name="__main__")')
TINY_DATA = ["data=synthetic", "data.train_size=256", "data.val_size=64", "data.test_size=64"]


def per_model_epoch(code: str, args: list[str], model_epochs: int,
                    results: dict[str, float] | None = None) -> float:
    """Wall seconds of a child sweep (in a fresh folder) per model-epoch; each run's final
    val/mse goes into `results` (run folder -> value) when given, epochs checked."""
    with tempfile.TemporaryDirectory() as cwd:
        seconds = peak_rss_run(code, [*args, "hydra.sweep.dir=sweep"], cwd)[0]
        if results is not None:
            results.update(sweep_results(Path(cwd) / "sweep", model_epochs))
        return seconds / model_epochs


def sweep_results(sweep: Path, model_epochs: int) -> dict[str, float]:
    """Run folder -> final val/mse of a finished sweep; refuses a sweep whose runs did not all
    complete or whose epochs do not add up to `model_epochs` (then a ratio would compare
    different work)."""
    found = {p.parent.relative_to(sweep).as_posix(): json.loads(p.read_text())
             for p in sweep.rglob("metrics.json")}
    epochs = sum(m["epochs"] for m in found.values())
    if any(m["status"] != "completed" for m in found.values()) or epochs != model_epochs:
        raise SystemExit(f"bench: the sweep in {sweep} did not complete {model_epochs} "
                         f"model-epochs ({epochs}); no figure")
    return {name: m["val"]["mse"] for name, m in found.items()}


def bench_sweep(root: str) -> None:
    grid = ["loss=bce,mse", "activation=sigmoid,relu", "seed=0,1", "trainer.max_epochs=1",
            f"data.root={root}", "trainer.enable_progress_bar=false"]
    with tempfile.TemporaryDirectory() as cwd:
        seq, _ = child_run(["-m", *grid, "hydra.sweep.dir=seq"], cwd)
        par, _ = child_run(["-m", *grid, "hydra.sweep.dir=par", "hydra/launcher=joblib",
                            "hydra.launcher.n_jobs=2"], cwd)
    report("8-run MNIST grid, joblib 2 / sequential", par, seq, "joblib", "sequential", "<= 0.6x")
    bench_thread_bound(root)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-root", default=os.environ.get("AELAB_DATA_DIR", "./data"))
    parser.add_argument("--epochs", type=int, default=4,
                        help="epochs per timed run (>= 2; the first is warm-up)")
    parser.add_argument("--repeat", type=int, default=3,
                        help="interleaved measurements per figure (the median is reported)")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[128, 32, 512])
    parser.add_argument("--only", choices=list(FIGURES), action="append")
    parser.add_argument("--sweep", action="store_true", help="also time the 8-run grid (minutes)")
    parser.add_argument("--stacked", action="store_true",
                        help="time stacked sweeps (alone unless --only names other figures)")
    parser.add_argument("--stacked-ks", type=int, nargs="+", default=[4, 8, 16])
    parser.add_argument("--stacked-nets", nargs="*", choices=["conv", "vae"], default=[],
                        help="also conv / VAE sweeps stacked (stack_conv=true) vs in a row, at "
                             "the smallest --stacked-ks")
    parser.add_argument("--stacked-parts", nargs="+", choices=["sweeps", "hand", "engines"],
                        default=["sweeps", "hand", "engines"],
                        help="sweeps: whole child sweeps stacked vs in a row (and joblib); "
                             "hand: aelab vs hand-written loops; engines: per step, baddbmm "
                             "and vmap vs in a row")
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto",
                        help="where hand loops and aelab runs train (auto: cuda if present)")
    parser.add_argument("--stacked-data", choices=["mnist", "synthetic"], default="mnist",
                        help="synthetic: a tiny set, to check the figure runs (timings mean "
                             "little)")
    args = parser.parse_args(argv)
    args.data_root = str(Path(args.data_root).resolve())  # the child runs start elsewhere
    if args.epochs < 2 or args.repeat < 1:
        parser.error("--epochs must be >= 2 (the first epoch is warm-up) and --repeat >= 1")
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: torch sees no CUDA device")
    DEVICE["name"] = args.device
    only = set(args.only or ([] if args.stacked else FIGURES))
    print(f"aelab bench: {os.cpu_count()} CPUs, torch {torch.__version__} "
          f"({torch.get_num_threads()} threads), device {device()}"
          + (f" {torch.cuda.get_device_name()}" if torch.cuda.is_available() else ""), flush=True)
    steps: dict[str, Callable[[], object]] = {
        "epoch": lambda: bench_epoch(args.data_root, args.epochs, args.repeat, args.batch_sizes),
        "conv": lambda: bench_conv(args.data_root, args.epochs, args.repeat),
        "textbook": lambda: bench_textbook(args.data_root, args.epochs, args.repeat),
        "diagnostics": lambda: bench_diagnostics(args.data_root, args.epochs, args.repeat),
        "startup": bench_startup,
        "launch": lambda: bench_launch_and_memory(args.data_root),
    }
    for name, step in steps.items():
        if name in only:
            step()
    if args.sweep:
        bench_sweep(args.data_root)
    if args.stacked:
        from benchmarks.stacked import bench_stacked

        bench_stacked(args.data_root, args.epochs, args.repeat, args.stacked_ks,
                      args.stacked_data, args.stacked_nets, args.stacked_parts)


if __name__ == "__main__":
    main()
