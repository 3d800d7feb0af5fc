"""Variational autoencoders (model.variational=true): the net, the objective, the refusal,
what a run logs, posterior collapse, and (slow) the negative ELBO on binarised MNIST."""

from __future__ import annotations

import json
import math
import time

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from aelab.diagnostics.callback import Diagnostics
from aelab.diagnostics.verdict import VERDICTS
from aelab.errors import ConfigError
from aelab.losses import elbo
from aelab.models import VariationalEncoder
from aelab.training.build import build
from aelab.training.run import run

from conftest import TINY, compose_config, run_cli
from events import load_events

VAE = [*TINY, "model.variational=true"]


# ---------------------------------------------------------------- the net


@pytest.mark.parametrize("model", [["model=mlp"], ["model=conv", "model.channels=[4,8]"],
                                   ["model=conv_mlp"]])
def test_the_code_layer_gives_mean_and_log_variance(make_config, model):
    parts = build(make_config(*VAE, *model, "logger=none"))
    net, x = parts.net, parts.data.probe(5)
    assert net.variational and isinstance(net.encoder, VariationalEncoder)
    d = net.code_dim
    head = net.encoder.stages[-1].weight_layer
    assert isinstance(head, nn.Linear) and head.out_features == 2 * d
    assert net.weight_layers()[len(net.encoder.stages) - 1] is head  # diagnostics see it
    mu, logvar = net.posterior(x)
    assert mu.shape == logvar.shape == (5, d)
    assert torch.equal(net.encode(x), mu)  # the deterministic path: the posterior mean
    pre, post = net.trace(x)
    assert torch.equal(post[net.code_layer], mu) and len(pre) == len(net.weight_layers())
    assert net.decode(mu).shape == x.shape


def test_the_non_variational_net_is_unchanged(make_config):
    net = build(make_config(*TINY, "logger=none")).net
    assert not net.variational and not isinstance(net.encoder, VariationalEncoder)
    assert [w.out_features for w in net.weight_layers()] == [100, 50, 100, 784]


# ---------------------------------------------------------------- the objective


def by_hand(net, x, beta):
    """-ELBO per image, batch mean: Bernoulli NLL summed over pixels + beta KL, one z each."""
    mu, logvar = net.posterior(x)
    z = mu + torch.exp(0.5 * logvar) * torch.randn(mu.shape)
    nll = F.binary_cross_entropy_with_logits(net.decode(z), x, reduction="none").sum(1)
    kl = 0.5 * (mu**2 + logvar.exp() - 1 - logvar).sum(1)
    return (nll + beta * kl).mean(), nll, kl


def test_the_objective_is_nll_summed_over_pixels_plus_beta_kl(make_config):
    cfg = make_config(*VAE, "loss=bce", "normalization=binary", "model.beta=2.5", "logger=none")
    parts = build(cfg)
    module, x = parts.module, parts.data.probe(16)
    torch.manual_seed(123)
    objective, loss = module.objective(x)
    torch.manual_seed(123)
    expected, nll, _ = by_hand(parts.net, x, 2.5)
    assert objective.item() == pytest.approx(expected.item(), rel=1e-6)
    assert loss.item() == pytest.approx((nll / x.shape[1]).mean().item(), rel=1e-5)


def test_warm_up_and_free_bits_change_the_kl_term(make_config):
    cfg = make_config(*VAE, "loss=bce", "normalization=binary", "model.beta=2.0",
                      "model.kl_warmup_epochs=2", "model.free_bits=0.5", "logger=none")
    parts = build(cfg)
    module, net, x = parts.module, parts.net, parts.data.probe(16)
    module._kl_epoch = 0.5  # a quarter of the way through the warm-up: weight 0.5
    torch.manual_seed(7)
    objective, _ = module.objective(x)
    torch.manual_seed(7)
    mu, logvar = net.posterior(x)
    z = mu + torch.exp(0.5 * logvar) * torch.randn(mu.shape)
    nll = F.binary_cross_entropy_with_logits(net.decode(z), x, reduction="none").sum(1)
    kl_dim = 0.5 * (mu**2 + logvar.exp() - 1 - logvar)
    free = kl_dim.mean(0).clamp(min=0.5).sum()
    assert objective.item() == pytest.approx((nll.mean() + 0.5 * free).item(), rel=1e-6)


# ---------------------------------------------------------------- refusals


def test_a_loss_that_is_no_likelihood_is_refused(make_config):
    with pytest.raises(ConfigError, match=r"model\.variational=true.*loss=l1") as info:
        build(make_config(*VAE, "loss=l1", "logger=none"))
    assert "model.allow_non_likelihood=true" in str(info.value)
    parts = build(make_config(*VAE, "loss=huber", "model.allow_non_likelihood=true",
                              "logger=none"))
    assert parts.net.variational


@pytest.mark.parametrize("key", ["model.beta=-1", "model.iwae_samples=0", "model.free_bits=-0.1",
                                 "model.variational=maybe"])
def test_bad_vae_settings_are_refused(make_config, key):
    with pytest.raises(ConfigError, match=key.split("=")[0].replace(".", r"\.")):
        build(make_config(*VAE, key, "logger=none"))


def test_the_cli_refuses_a_non_likelihood_loss_with_exit_2(tmp_path):
    proc = run_cli(*VAE, "loss=huber", "hydra.run.dir=run", cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "model.variational=true" in proc.stderr and "loss=huber" in proc.stderr
    assert not (tmp_path / "run" / "last.ckpt").exists()


# ---------------------------------------------------------------- runs


def test_a_variational_run_logs_elbo_kl_samples_and_reconstructions(tmp_path):
    proc = run_cli(*VAE, "model.iwae_samples=8", "hydra.run.dir=run", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    folder = tmp_path / "run"
    acc = load_events(folder)
    scalars, images = set(acc.Tags()["scalars"]), set(acc.Tags()["images"])
    assert {"train/elbo", "val/elbo", "val/nll", "val/kl", "val/mse", "val/bce"} <= scalars
    assert {"latent/kl_total", "latent/active_units", "latent/mutual_information",
            "latent/kl/z1", "latent/kl/z50"} <= scalars
    assert {"samples/prior", "reconstructions"} <= images
    assert "samples/latent_grid" not in images  # a 50-d code
    metrics = json.loads((folder / "metrics.json").read_text())
    test = metrics["test"]
    assert {"elbo", "nll", "kl", "iwae", "mse", "bce"} <= set(test)
    assert test["elbo"] == pytest.approx(-(test["nll"] + test["kl"]), rel=1e-5)
    # the test KL is the analytic KL of the saved encoder's posteriors on the test images
    parts = build(compose_config([*VAE, "model.iwae_samples=8"], tmp_path / "again"))
    checkpoint = torch.load(folder / "last.ckpt", map_location="cpu", weights_only=True)
    parts.module.load_state_dict(checkpoint["state_dict"])
    with torch.no_grad():
        mu, logvar = parts.net.posterior(parts.data.splits["test"])
        kl = elbo.gaussian_kl(mu, logvar).sum(1).mean().item()
        # and the k = 8 bound is tighter than k = 1 (the ELBO) on the same images, on average
        x = parts.data.splits["test"]
        gen = torch.Generator().manual_seed(0)
        k1 = torch.stack([parts.module.iwae(x, mu, logvar, 1, gen) for _ in range(8)]).mean()
        k8 = parts.module.iwae(x, mu, logvar, 8, gen).mean()
    assert test["kl"] == pytest.approx(kl, rel=1e-5) and kl > 0
    assert k8.item() > k1.item(), (k8, k1)
    assert test["iwae"] > test["elbo"], test  # the recorded bound too
    assert len(metrics["history"]["val/elbo"]) == 1
    assert metrics["verdict"] in VERDICTS


def test_a_conv_vae_trains_one_step_with_a_2d_latent_grid(make_config, tmp_path):
    cfg = make_config(*VAE, "model=conv", "model.channels=[4,8]", "model.code_dim=2",
                      "loss=bce", "+trainer.max_steps=1", "model.iwae_samples=4", name="conv")
    result = run(cfg)
    assert result["status"] == "completed"
    assert all(torch.isfinite(torch.tensor(v)) for v in result["test"].values())
    assert result["diagnostics"]["latent/kl/z2"] >= 0
    images = set(load_events(tmp_path / "conv").Tags()["images"])
    assert {"samples/prior", "samples/latent_grid"} <= images


def test_the_learned_sigma_of_gaussian_nll_is_logged_each_epoch(make_config, tmp_path):
    """train/sigma is exp(log_var / 2) of the trained loss: 1 at init, moved by training."""
    cfg = make_config(*VAE, "loss=gaussian_nll", "trainer.max_epochs=2", "model.iwae_samples=2",
                      "optimizer.lr=0.01", name="sigma")
    result = run(cfg)
    sigmas = result["history"]["train/sigma"]
    state = torch.load(tmp_path / "sigma" / "last.ckpt", weights_only=False)["state_dict"]
    assert len(sigmas) == 2 and sigmas[1] < sigmas[0] < 1.0
    assert sigmas[1] == pytest.approx(math.exp(0.5 * float(state["loss_fn.log_var"])), rel=1e-6)
    assert "train/sigma" in load_events(tmp_path / "sigma").Tags()["scalars"]


def test_a_huge_kl_weight_collapses_the_posterior(make_config):
    cfg = make_config(*VAE, "data.train_size=1024", "data.batch_size=32", "trainer.max_epochs=3",
                      "model.beta=1000", "loss=bce", "model.iwae_samples=2", "logger=none",
                      "callbacks.diagnostics.probe_size=64")
    result = run(cfg)
    final = result["diagnostics"]
    assert final["latent/active_units"] == 0 and final["latent/kl_total"] < 0.1, final
    assert result["verdict"] == "posterior_collapse", result["verdict_reason"]


def test_posterior_collapse_wins_over_blob_but_not_diverged():
    diag = Diagnostics()
    diag.history = {"epoch": [0.0, 1.0], "blob/ev": [0.0, 0.01], "loss": [1.0],
                    "latent/active_units": [3.0, 0.0], "latent/kl_total": [5.0, 0.02]}
    assert diag.summary()["verdict"] == "posterior_collapse"
    assert diag.summary(diverged="the loss became nan")["verdict"] == "diverged"
    diag.history["latent/active_units"][-1] = 2.0  # "active" units but 0.02 nats: collapsed
    assert diag.summary()["verdict"] == "posterior_collapse"
    diag.history["latent/kl_total"][-1] = 5.0  # information in z: not collapsed
    assert diag.summary()["verdict"] == "blob"


# ---------------------------------------------------------------- real MNIST

# Measured once (2-core AMD EPYC, shared with a sweep, ~100 s per epoch there), validation
# -ELBO per epoch: 140.9, 122.6, 116.1, 111.6, 109.1, 107.4, 106.1, 105.2, 104.1 (9),
# 103.6 (10), 103.1 (11): 12 epochs leave ~2 nats of margin. This test, once (unshared):
# test -ELBO 101.55 nats (nll 81.88 + kl 19.67), IWAE k=100 97.42, 11 active units, 180 s.
MNIST_EPOCHS = 12
MNIST_NEG_ELBO = 105.0  # nats per image


@pytest.mark.slow
def test_mlp_vae_on_binarised_mnist(make_config, mnist_root):
    """model=vae (784-512-256, code 20) with ReLU units, Bernoulli likelihood on dynamically
    binarised MNIST, Adam 1e-3, batch 128: the test negative ELBO below 105 nats per image."""
    cfg = make_config("model=vae", "activation=relu", "loss=bce",
                      "normalization=stochastic_binary", "optimizer=adam", "optimizer.lr=0.001",
                      f"data.root={mnist_root}", "logger=none", "trainer.enable_progress_bar=false",
                      f"trainer.max_epochs={MNIST_EPOCHS}")
    started = time.perf_counter()
    result = run(cfg)
    seconds = time.perf_counter() - started
    test = result["test"]
    print(f"\nMNIST model=vae, {MNIST_EPOCHS} epochs: test -ELBO {-test['elbo']:.2f} nats "
          f"(nll {test['nll']:.2f} + kl {test['kl']:.2f}), IWAE (k=100) -log p(x) <= "
          f"{-test['iwae']:.2f}, active units {result['diagnostics']['latent/active_units']:.0f}, "
          f"{seconds:.0f} s")
    assert -test["elbo"] < MNIST_NEG_ELBO
    assert test["iwae"] >= test["elbo"]
