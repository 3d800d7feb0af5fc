"""Stacked sweeps (python -m aelab.stacked): each stacked run is its single run.

Measured on this 2-core CPU (torch 2.14, threads 1 and 2): over 20 epochs of the tiny
synthetic runs, the stacked runs' train/loss, val/loss, val/bce and test/mse equal their
single runs' exactly (relative difference 0); with lr 3e-4 and 1e-4 in a group whose
largest lr is 1e-3 (their steps scaled, stacked_train.LrScale), within 4e-7. TOLERANCE
leaves room for kernels that round differently (a GPU's bmm) while staying far below the
difference between two seeds (~1e-3).
"""

from __future__ import annotations

import json
import math
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from aelab.errors import ConfigError
from aelab.stacked.plan import describe_plan, plan_groups
from aelab.stacked.sweep import main, plan_jobs, split_args
from aelab.training.run import run

from conftest import TINY, compose_config, run_cli
from events import hparams_of, load_events

TOLERANCE = 1e-4  # relative, per epoch value
EPOCHS = ["trainer.max_epochs=3"]


def folder_of(sweep: Path, **values: object) -> Path:
    """The one run folder of `sweep` whose name holds every key=value of `values`."""
    found = [p for p in sweep.iterdir() if p.is_dir()
             and all(f"{k}={v}" in p.name.split(",") for k, v in values.items())]
    assert len(found) == 1, found
    return found[0]


def metrics(folder: Path) -> dict:
    return json.loads((folder / "metrics.json").read_text())


def curves_agree(a: dict, b: dict, keys=("train/loss", "val/loss", "val/bce")) -> bool:
    return all(
        len(a["history"][k]) == len(b["history"][k])
        and all(math.isclose(x, y, rel_tol=TOLERANCE) for x, y in zip(a["history"][k],
                                                                     b["history"][k]))
        for k in keys
    )


def tags(folder: Path) -> dict[str, set[str]]:
    acc = load_events(folder)
    return {kind: set(acc.Tags()[kind]) for kind in ("scalars", "images", "histograms")}


def single(tmp_path: Path, name: str, *overrides: str) -> dict:
    return run(compose_config([*TINY, *EPOCHS, *overrides], tmp_path / name))


def test_three_seeds_stacked_equal_their_single_runs(tmp_path, capsys):
    sweep = tmp_path / "sweep"
    assert main([*TINY, *EPOCHS, "seed=0,1,2", f"hydra.sweep.dir={sweep}"]) == 0
    assert "1 stacked group(s) of at most 8 (3 runs)" in capsys.readouterr().out
    singles = {seed: single(tmp_path, f"single{seed}", f"seed={seed}") for seed in (0, 1, 2)}
    for seed, alone in singles.items():
        folder = folder_of(sweep, seed=seed)
        stacked = metrics(folder)
        assert stacked["status"] == "completed" and stacked["stacked"]["runs"] == 3
        assert set(stacked) - {"stacked"} == set(alone)
        assert set(stacked["history"]) == set(alone["history"])
        assert set(stacked["diagnostics"]) == set(alone["diagnostics"])
        assert stacked["verdict"] == alone["verdict"]
        assert curves_agree(stacked, alone)
        assert math.isclose(stacked["test"]["mse"], alone["test"]["mse"], rel_tol=TOLERANCE)
        assert tags(folder) == tags(tmp_path / f"single{seed}")
        params, metric_tags = hparams_of(load_events(folder))
        assert params["seed"] == str(seed) and params["data.train_size"] == "256"  # overrides
        assert metric_tags == hparams_of(load_events(tmp_path / f"single{seed}"))[1]
        assert (folder / ".hydra" / "config.yaml").is_file()
        assert f"seed={seed}" in (folder / ".hydra" / "overrides.yaml").read_text()
        mine = torch.load(folder / "last.ckpt", weights_only=True)
        theirs = torch.load(tmp_path / f"single{seed}" / "last.ckpt", weights_only=True)
        assert mine.keys() == theirs.keys() and mine["loops"] == theirs["loops"]
        assert mine["callbacks"].keys() == theirs["callbacks"].keys()
        assert mine["state_dict"].keys() == theirs["state_dict"].keys()
        for key, value in theirs["state_dict"].items():
            torch.testing.assert_close(mine["state_dict"][key], value, rtol=TOLERANCE, atol=1e-6)
    # the comparison can fail: a stacked run against another seed's single run
    assert not curves_agree(metrics(folder_of(sweep, seed=0)), singles[1])
    assert not curves_agree(metrics(folder_of(sweep, seed=2)), singles[0])
    # resume=true skips the finished runs
    before = {seed: metrics(folder_of(sweep, seed=seed))["wall_time_s"] for seed in (0, 1, 2)}
    assert main([*TINY, *EPOCHS, "seed=0,1,2", f"hydra.sweep.dir={sweep}", "resume=true"]) == 0
    assert before == {seed: metrics(folder_of(sweep, seed=seed))["wall_time_s"]
                      for seed in (0, 1, 2)}


def test_normalisations_share_a_group_each_on_its_own_data(tmp_path, capsys):
    """unit, clamped and stochastic_binary (a fresh sample per batch) in one stacked group: each
    slot trains and validates on its own normalisation's data, as its single run does."""
    sweep = tmp_path / "sweep"
    common = [*TINY, *EPOCHS, "loss=bce", "logger=none"]
    norms = ("unit", "clamped", "stochastic_binary")
    assert main([*common, f"normalization={','.join(norms)}", f"hydra.sweep.dir={sweep}"]) == 0
    assert "1 stacked group(s) of at most 8 (3 runs)" in capsys.readouterr().out
    results = {}
    for norm in norms:
        stacked = metrics(folder_of(sweep, normalization=norm))
        alone = single(tmp_path, norm, *common[len(TINY) + len(EPOCHS):], f"normalization={norm}")
        assert stacked["status"] == "completed" and curves_agree(stacked, alone), norm
        results[norm] = stacked["history"]["val/bce"]
    assert len({tuple(v) for v in results.values()}) == 3  # three different data sets


def test_single_run_resumes_a_stacked_checkpoint(tmp_path):
    sweep = tmp_path / "sweep"
    assert main([*TINY, *EPOCHS, "seed=3,4", f"hydra.sweep.dir={sweep}", "logger=none"]) == 0
    folder = folder_of(sweep, seed=3)
    longer = ["trainer.max_epochs=4", "logger=none"]
    resumed = run(compose_config([*TINY, "seed=3", "resume=true", *longer], repr(str(folder))))
    alone = run(compose_config([*TINY, "seed=3", *longer], tmp_path / "alone"))
    assert resumed["status"] == "completed" and resumed["resumed_from_epoch"] == 3
    assert resumed["epochs"] == alone["epochs"] == 4
    assert curves_agree(resumed, alone)


def test_a_diverging_slot_is_masked_and_the_others_complete(tmp_path):
    """SGD (lr 0.1) with l2_penalty=1e4 multiplies the weights by -1999 a step: inf within
    the first epochs; the same optimiser with l2_penalty 0 or 1e-4 trains normally."""
    sweep = tmp_path / "sweep"
    common = [*TINY, "trainer.max_epochs=4", "optimizer=sgd", "logger=none"]
    assert main([*common, "l2_penalty=0,0.0001,10000.0", f"hydra.sweep.dir={sweep}"]) == 0
    diverged = metrics(folder_of(sweep, l2_penalty="10000.0"))
    assert diverged["status"] == "diverged" and diverged["verdict"] == "diverged"
    assert "training diverged" in diverged["error"] and "diverged_at" in diverged
    for value in ("0", "0.0001"):
        done = metrics(folder_of(sweep, l2_penalty=value))
        assert done["status"] == "completed" and done["epochs"] == 4
        alone = run(compose_config([*common, f"l2_penalty={value}"], tmp_path / value))
        assert curves_agree(done, alone)  # the masked slot did not disturb the others


@pytest.mark.parametrize("net", [[], ["model=conv", "model.channels=[4,8]"]],
                         ids=["mlp", "conv"])
def test_a_groups_gradient_samples_equal_their_single_runs(tmp_path, net):
    """grads/* (norms, update ratios, the data term's and the penalty's pull on W1), taken for
    every slot at once from the stacked gradients (StackedMLP, or torch.func's stack for a
    conv net), equal each single run's own hook's; with two penalties in the group, so the
    split differs by slot."""
    sweep = tmp_path / "sweep"
    common = [*TINY, *EPOCHS, "logger=none", "callbacks.diagnostics.sample_every=2", *net]
    launcher = ["stack_conv=true"] if net else []
    assert main([*common, "l2_penalty=0,0.001", *launcher, f"hydra.sweep.dir={sweep}"]) == 0
    for value in ("0", "0.001"):
        stacked = metrics(folder_of(sweep, l2_penalty=value))["diagnostics_history"]
        alone = run(compose_config([*common, f"l2_penalty={value}"], tmp_path / value))
        alone = alone["diagnostics_history"]
        keys = [k for k in alone if k.startswith("grads/")]
        assert {"grads/norm/W1", "grads/update_ratio/W4", "grads/data/W1",
                "grads/penalty/W1"} <= set(keys)
        for key in keys:
            assert len(stacked[key]) == len(alone[key]) == 3, key  # one per epoch
            for x, y in zip(stacked[key], alone[key]):
                assert math.isclose(x, y, rel_tol=TOLERANCE, abs_tol=1e-9), (key, x, y)
        penalty = alone["grads/penalty/W1"][-1]
        assert (penalty == 0.0) == (value == "0")  # the comparison can fail: 0 vs > 0


def test_lr_may_differ_in_a_group_and_a_huge_lr_diverges_alone(tmp_path):
    """SGD with lr 10 on ReLU units and standardised data overflows (tests/test_divergence.py);
    lr 0.01 and 0.1 train, in the same stacked group, as they do alone."""
    sweep = tmp_path / "sweep"
    common = [*TINY, "trainer.max_epochs=4", "optimizer=sgd", "activation=relu",
              "normalization=standard", "logger=none"]
    assert main([*common, "optimizer.lr=0.01,0.1,10", f"hydra.sweep.dir={sweep}"]) == 0
    diverged = metrics(folder_of(sweep, **{"optimizer.lr": 10}))
    assert diverged["status"] == "diverged" and diverged["verdict"] == "diverged"
    for lr in (0.01, 0.1):
        done = metrics(folder_of(sweep, **{"optimizer.lr": lr}))
        assert done["status"] == "completed" and done["history"]["train/lr"][-1] == \
            pytest.approx(lr)
        alone = run(compose_config([*common, f"optimizer.lr={lr}"], tmp_path / str(lr)))
        assert curves_agree(done, alone)
        ckpt = torch.load(folder_of(sweep, **{"optimizer.lr": lr}) / "last.ckpt",
                          weights_only=True)
        assert ckpt["optimizer_states"][0]["param_groups"][0]["lr"] == lr


def test_plan_splits_activations_and_widths_and_leaves_conv_alone(tmp_path, capsys):
    jobs = plan_jobs([*TINY, "activation=sigmoid,relu", "model.hidden=[16,8],[32,8]",
                      "seed=0,1,2"], [f"hydra.sweep.dir={tmp_path}/plan"]).jobs
    plan = plan_groups([cfg for cfg, _, _ in jobs], stack=2)
    assert not plan.single
    assert sorted(len(g) for g in plan.groups) == [1, 1, 1, 1, 2, 2, 2, 2]  # 4 cells x (2 + 1)
    for group in plan.groups:
        cells = {(jobs[i][0].activation._target_, tuple(jobs[i][0].model.hidden))
                 for i in group}
        assert len(cells) == 1
    conv = plan_jobs([*TINY, "model=conv,mlp"], [f"hydra.sweep.dir={tmp_path}/conv"]).jobs
    plan = plan_groups([cfg for cfg, _, _ in conv], stack=8)
    assert len(plan.groups) == 1 and len(plan.single) == 1
    text = describe_plan(plan, ["data=synthetic,model=conv", "data=synthetic,model=mlp"], 8)
    assert "group 1 (1 runs): model=mlp" in text
    assert ("single: model=conv (cannot be stacked: model.encoder is "
            "aelab.models.ConvEncoder") in text
    timed = plan_jobs([*TINY, "+callbacks.timer._target_=benchmarks.timing.EpochTimer",
                       "+callbacks.timer.dirpath=.", "seed=0,1"],
                      [f"hydra.sweep.dir={tmp_path}/timed"]).jobs
    plan = plan_groups([cfg for cfg, _, _ in timed], stack=8)
    assert not plan.groups and "callbacks.timer (benchmarks.timing.EpochTimer)" in plan.single[0][1]
    # the CLI prints the plan before it trains
    sweep = tmp_path / "two"
    assert main([*TINY, "activation=sigmoid,relu", "logger=none", f"hydra.sweep.dir={sweep}"]) == 0
    out = capsys.readouterr().out
    assert out.index("2 stacked group(s)") < out.index("sweep ")


def test_trainer_keys_reach_the_group_as_they_reach_a_single_run(tmp_path, capsys):
    """+trainer.limit_train_batches=3 (Lightning batches: calls of steps_per_call=2 steps),
    limit_val_batches and check_val_every_n_epoch reach the group's Trainer: every run takes
    3 x 2 steps an epoch and validates on one batch every 2nd epoch, as its single run."""
    sweep = tmp_path / "sweep"
    common = [*TINY, "trainer.max_epochs=3", "data.batch_size=16", "data.eval_batch_size=16",
              "steps_per_call=2", "logger=none", "+trainer.limit_train_batches=3",
              "+trainer.limit_val_batches=1", "+trainer.check_val_every_n_epoch=2"]
    short = ("hydra.job.config.override_dirname.exclude_keys=[resume,sweep,data.eval_batch_size,"
             "trainer.limit_train_batches,trainer.limit_val_batches,"
             "trainer.check_val_every_n_epoch]")
    assert main([*common, "seed=0,1", f"hydra.sweep.dir={sweep}", short]) == 0
    assert "1 stacked group(s) of at most 8 (2 runs)" in capsys.readouterr().out
    for seed in (0, 1):
        folder = folder_of(sweep, seed=seed)
        stacked = metrics(folder)
        alone = run(compose_config([*common, f"seed={seed}"], tmp_path / f"single{seed}"))
        assert stacked["status"] == alone["status"] == "completed"
        assert stacked["test"]["step"] == alone["test"]["step"] == 3 * 3 * 2  # epochs x calls x 2
        assert torch.load(folder / "last.ckpt", weights_only=True)["global_step"] == 18
        assert len(stacked["history"]["train/loss"]) == 3
        assert len(stacked["history"]["val/loss"]) == 2  # validated after epoch 2 (kept at 3)
        assert curves_agree(stacked, alone) and stacked["val"] == alone["val"]


def test_callbacks_see_the_real_trainer_and_their_runs_module_on_the_device(tmp_path,
                                                                            monkeypatch):
    """Each run's callbacks get the group's Lightning Trainer (fitting, at its epoch and step)
    and the run's own module, already on the training device with its data; the run's
    loggers, metrics and data are the module's run_state."""
    import lightning as L

    from aelab.diagnostics.callback import Diagnostics
    from aelab.training.callbacks import MetricHistory

    seen = []
    start, epoch_end = Diagnostics.on_train_start, MetricHistory.on_train_epoch_end

    def spy_start(self, trainer, pl_module):
        data = pl_module.run_state.datamodule
        seen.append(("start", type(trainer), trainer.state.fn, pl_module.device,
                     data.splits["train"].device, id(pl_module)))
        return start(self, trainer, pl_module)

    def spy_epoch_end(self, trainer, pl_module):
        seen.append(("epoch_end", type(trainer), trainer.current_epoch, trainer.global_step,
                     sorted(pl_module.run_state.metrics), id(pl_module)))
        return epoch_end(self, trainer, pl_module)

    monkeypatch.setattr(Diagnostics, "on_train_start", spy_start)
    monkeypatch.setattr(MetricHistory, "on_train_epoch_end", spy_epoch_end)
    sweep = tmp_path / "sweep"
    assert main([*TINY, "trainer.max_epochs=2", "seed=0,1", "logger=none",
                 f"hydra.sweep.dir={sweep}"]) == 0
    starts = [s for s in seen if s[0] == "start"]
    ends = [s for s in seen if s[0] == "epoch_end"]
    assert len(starts) == 2 and len({s[-1] for s in starts}) == 2  # two modules, one each
    for _, kind, fn, device, data_device, _ in starts:
        assert issubclass(kind, L.Trainer) and fn == "fit" and device == data_device
    assert [(e[2], e[3]) for e in ends] == [(0, 4), (0, 4), (1, 8), (1, 8)]
    assert all(issubclass(e[1], L.Trainer) and "val/mse" in e[4] and "train/loss" in e[4]
               for e in ends)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_a_group_with_the_default_callbacks_trains_on_cuda(tmp_path):
    """The device a group exists for: default callbacks (diagnostics, images, checkpoint)."""
    sweep = tmp_path / "sweep"
    assert main([*TINY, "trainer.max_epochs=2", "trainer.accelerator=gpu", "seed=0,1",
                 f"hydra.sweep.dir={sweep}"]) == 0
    for seed in (0, 1):
        stacked = metrics(folder_of(sweep, seed=seed))
        assert stacked["status"] == "completed" and stacked["stacked"]["runs"] == 2
        alone = single(tmp_path, f"single{seed}", f"seed={seed}", "trainer.accelerator=gpu",
                       "trainer.max_epochs=2")
        assert math.isclose(stacked["test"]["mse"], alone["test"]["mse"], rel_tol=1e-3)


def test_a_trainer_key_a_group_does_not_honour_makes_its_run_train_alone(tmp_path):
    jobs = plan_jobs([*TINY, "+trainer.max_steps=-1,5", "+trainer.max_time=null",
                      "seed=0,1"], [f"hydra.sweep.dir={tmp_path}"]).jobs
    plan = plan_groups([cfg for cfg, _, _ in jobs], stack=8)
    assert [len(g) for g in plan.groups] == [2]
    assert [why for _, why in plan.single] == ["trainer.max_steps=5 (a group takes it at -1 "
                                               "only)"] * 2
    timed = plan_jobs([*TINY, "+trainer.max_time=00:00:10:00", "seed=0,1"],
                      [f"hydra.sweep.dir={tmp_path}/timed"]).jobs
    plan = plan_groups([cfg for cfg, _, _ in timed], stack=8)
    assert not plan.groups and plan.single[0][1].startswith(
        "trainer.max_time=00:00:10:00 (a group's Trainer honours trainer.max_epochs, ")


def worst_difference(a: dict, b: dict, keys: tuple[str, ...]) -> float:
    """The largest relative difference between two runs' histories (and test values)."""
    pairs = [(x, y) for k in keys for x, y in zip(a["history"][k], b["history"][k], strict=True)]
    pairs += [(a["test"][k], b["test"][k]) for k in b["test"]]
    return max(abs(x - y) / max(abs(y), 1e-12) for x, y in pairs)


@pytest.mark.parametrize("model", ["conv", "vae", "seed loss=gaussian_nll"])
def test_conv_and_vae_runs_stack_with_torch_func_and_equal_their_single_runs(
        tmp_path, capsys, model):
    """stack_conv=true (on the CPU, where the measured rule leaves them alone): three seeds of
    model=conv or model=vae as one group through torch.func (vmap over the single module's
    objective_terms), each run equal to its single run: a VAE slot draws its noise from its
    single run's global RNG state; gaussian_nll's log sigma^2 is stacked with the weights.
    Measured on this 2-core CPU (torch 2.14), 2 epochs: conv
    within 1.3e-7 relative, the MLP VAE within 1.7e-7 (vmap's batched kernels round unlike
    the single run's; a mixed conv group of 2 losses x 2 lrs x 2 penalties within 1.4e-5)."""
    sweep = tmp_path / "sweep"
    common = [*TINY, "trainer.max_epochs=2", *f"model={model}".split(), "logger=none"]
    assert main([*common, "seed=0,1,2", "stack_conv=true", f"hydra.sweep.dir={sweep}"]) == 0
    assert "1 stacked group(s) of at most 8 (3 runs)" in capsys.readouterr().out
    singles = {seed: run(compose_config([*common, f"seed={seed}"], tmp_path / f"s{seed}"))
               for seed in (0, 1, 2)}
    for seed, alone in singles.items():
        stacked = metrics(folder_of(sweep, seed=seed))
        assert stacked["status"] == "completed" and stacked["epochs"] == 2
        assert stacked["stacked"] == {"runs": 3, "slot": seed}  # trained in the group
        assert set(stacked["history"]) == set(alone["history"])
        assert worst_difference(stacked, alone, tuple(alone["history"])) <= TOLERANCE, seed
    assert ("train/sigma" in singles[0]["history"]) == ("gaussian_nll" in model)
    assert worst_difference(metrics(folder_of(sweep, seed=0)), singles[1],
                            ("train/loss", "val/loss")) > 1e-3
    # without the switch, on the CPU, the plan leaves them alone (and says why)
    with pytest.raises(ConfigError, match="hydra.launcher.stack_conv=true stacks any net"):
        main([*common, "seed=0,1", f"hydra.sweep.dir={tmp_path}/alone"])


@pytest.mark.parametrize(("algorithm", "clip"), [("norm", 0.002), ("value", 1e-5)])
def test_clipping_and_accumulation_in_a_group_are_the_single_runs(tmp_path, algorithm, clip):
    """trainer.gradient_clip_val (each slot clipped on its own gradients) and
    accumulate_grad_batches=3 (16 batches an epoch: 5 steps of 3 and one of the last batch)
    with two learning rates in one group, each run equal to its single run."""
    sweep = tmp_path / "sweep"
    common = [*TINY, "trainer.max_epochs=2", "data.batch_size=16", "steps_per_call=4",
              "logger=none", f"trainer.gradient_clip_val={clip}",
              f"trainer.gradient_clip_algorithm={algorithm}", "trainer.accumulate_grad_batches=3"]
    short = ("hydra.job.config.override_dirname.exclude_keys=[resume,sweep,data.batch_size,"
             "data.train_size,data.val_size,data.test_size,trainer.gradient_clip_val,"
             "trainer.gradient_clip_algorithm,trainer.accumulate_grad_batches]")
    assert main([*common, "optimizer.lr=0.001,0.003", f"hydra.sweep.dir={sweep}", short]) == 0
    for lr in (0.001, 0.003):
        stacked = metrics(folder_of(sweep, **{"optimizer.lr": lr}))
        alone = run(compose_config([*common, f"optimizer.lr={lr}"], tmp_path / str(lr)))
        assert stacked["stacked"]["runs"] == 2 and stacked["test"]["step"] == 12 == \
            alone["test"]["step"]
        assert curves_agree(stacked, alone)
    unclipped = run(compose_config([*common, "optimizer.lr=0.003",
                                    "trainer.gradient_clip_val=null"], tmp_path / "unclipped"))
    assert not curves_agree(metrics(folder_of(sweep, **{"optimizer.lr": 0.003})), unclipped)


@pytest.mark.parametrize("stack", ["0", "-1", "two"])
def test_bad_stack_is_refused(stack):
    with pytest.raises(ConfigError, match=f"stack={stack} must be an integer >= 1"):
        split_args(["seed=0,1", f"stack={stack}"])


def test_nothing_stackable_is_refused_before_any_folder(tmp_path):
    sweep = tmp_path / "sweep"
    with pytest.raises(ConfigError, match="none of the 2 run.*model=mlp or seed"):
        main([*TINY, "model=conv", "seed=0,1", f"hydra.sweep.dir={sweep}"])
    assert not sweep.exists()


def test_the_seeds_sweep_stacks_losses_together_and_splits_activations(tmp_path):
    """sweeps/seeds.yaml: loss bce,mse x activation sigmoid,relu x seed 0,1,2 (MNIST, not
    trained here): 2 groups of 6, one per activation; bce and mse share one (sigmoid output)."""
    sweep = plan_jobs(["+sweep=seeds"], [f"hydra.sweep.dir={tmp_path}"])
    jobs = sweep.jobs
    assert sweep.swept == {"loss", "activation", "seed"} and len(jobs) == 12
    plan = plan_groups([cfg for cfg, _, _ in jobs], stack=8)
    assert sorted(len(g) for g in plan.groups) == [6, 6] and not plan.single
    assert [len(g) for g in plan_groups([cfg for cfg, _, _ in jobs], stack=4).groups] == \
        [3, 3, 3, 3]  # balanced: 6 runs of a cell in two groups of 3, not 4 and 2
    for group in plan.groups:
        assert len({jobs[i][0].activation._target_ for i in group}) == 1
        assert {jobs[i][1]["loss"] for i in group} == {"bce", "mse"}


def test_cli_refuses_stack_zero_with_exit_2(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "aelab.stacked", *TINY, "seed=0,1", "stack=0",
                           f"hydra.sweep.dir={tmp_path}/sweep"], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 2
    assert "aelab: error: stack=0 must be an integer >= 1" in proc.stderr
    assert not (tmp_path / "sweep").exists()


@pytest.mark.slow
def test_twenty_epochs_of_three_stacked_seeds_stay_within_the_tolerance(tmp_path):
    """The measurement behind TOLERANCE: 20 epochs, every epoch value of every curve."""
    twenty = [*TINY, "trainer.max_epochs=20", "logger=none"]
    sweep = tmp_path / "sweep"
    assert main([*twenty, "seed=0,1,2", f"hydra.sweep.dir={sweep}"]) == 0
    worst = 0.0
    for seed in (0, 1, 2):
        alone = run(compose_config([*twenty, f"seed={seed}"], tmp_path / f"single{seed}"))
        stacked = metrics(folder_of(sweep, seed=seed))
        for key in ("train/loss", "val/loss", "val/bce"):
            worst = max(worst, *(abs(a - b) / abs(a) for a, b in
                                 zip(alone["history"][key], stacked["history"][key])))
        assert len(stacked["history"]["val/loss"]) == 20
    print(f"largest relative difference over 20 epochs: {worst:.3g}")
    assert worst <= TOLERANCE


def test_sigterm_records_interrupted_and_resume_finishes_the_runs(tmp_path):
    sweep = tmp_path / "sweep"
    common = [*TINY, "logger=none", "seed=0,1", f"hydra.sweep.dir={sweep}",
              "hydra.job.config.override_dirname.exclude_keys=[resume,sweep,trainer.max_epochs]"]
    proc = subprocess.Popen([sys.executable, "-m", "aelab.stacked", *common,
                             "trainer.max_epochs=500"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not (sweep.is_dir() and len(list(sweep.glob("*/last.ckpt"))) == 2):
        assert time.monotonic() < deadline and proc.poll() is None, proc.communicate()
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err[-2000:]
    stopped = [metrics(folder_of(sweep, seed=seed)) for seed in (0, 1)]
    for record in stopped:
        assert record["status"] == "interrupted" and "resume=true" in record["error"]
        assert 1 <= record["epochs"] < 500
    epochs = max(record["epochs"] for record in stopped) + 1
    assert main([*common, f"trainer.max_epochs={epochs}", "resume=true"]) == 0
    for seed in (0, 1):
        done = metrics(folder_of(sweep, seed=seed))
        assert done["status"] == "completed" and done["epochs"] == epochs
        assert done["resumed_from_epoch"] >= 1


def test_hydra_launcher_stacked_trains_the_sweep_as_its_single_runs(tmp_path):
    proc = run_cli("-m", *TINY, *EPOCHS, "seed=0,1", "hydra/launcher=stacked",
                   "hydra.launcher.stack=2", "hydra.sweep.dir=sweep", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "1 stacked group(s) of at most 2 (2 runs)" in proc.stdout + proc.stderr
    for seed in (0, 1):
        folder = folder_of(tmp_path / "sweep", seed=seed)
        assert {p.name for p in (folder / ".hydra").iterdir()} == {
            "config.yaml", "hydra.yaml", "overrides.yaml"}
        stacked = metrics(folder)
        assert stacked["status"] == "completed" and f"seed={seed}" in stacked["overrides"]
        assert curves_agree(stacked, single(tmp_path, f"single{seed}", f"seed={seed}"))


def test_hydra_launcher_refuses_stack_zero_with_exit_2(tmp_path):
    proc = run_cli("-m", *TINY, "seed=0,1", "hydra/launcher=stacked", "hydra.launcher.stack=0",
                   "hydra.sweep.dir=sweep", cwd=tmp_path)
    assert proc.returncode == 2 and "aelab: error: stack=0 must be an integer >= 1" in proc.stderr
    assert not [p for p in (tmp_path / "sweep").glob("*") if p.is_dir()]


def test_a_stacked_mlp_follows_its_parameters_through_a_conversion(tmp_path):
    """StackedMLP keeps plain lists of its layers' tensors; a conversion that makes new
    Parameter objects (torch's overwrite_module_params_on_conversion) refreshes them, so the
    forward pass uses the converted weights (a stale list would compute in float32)."""
    from aelab.stacked.net import StackedMLP
    from aelab.training.build import build

    runs = [build(compose_config([*TINY, f"seed={s}"], tmp_path / str(s))).module
            for s in (0, 1)]
    stack = StackedMLP([0, 1], runs)
    x = torch.rand(2, 3, runs[0].net.weight_layers()[0].in_features)
    before = stack(x)
    old = torch.__future__.get_overwrite_module_params_on_conversion()
    torch.__future__.set_overwrite_module_params_on_conversion(True)
    try:
        stack.double()
    finally:
        torch.__future__.set_overwrite_module_params_on_conversion(old)
    assert all(w is p for w, p in zip(stack.weights, list(stack.params)[0::2]))
    after = stack(x.double())
    assert after.dtype == torch.float64
    torch.testing.assert_close(after.float(), before, rtol=1e-5, atol=1e-6)
