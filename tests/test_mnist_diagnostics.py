"""Real MNIST, seeded, CPU, a few short epochs: the verdicts the diagnostics give must be right.

A 20k-image prefix with batch 32 gives the seed network enough steps (3750) to leave the
mean-image plateau in a few seconds; the failing configurations fail within one or three
epochs of 10k images.
"""

import pytest

from aelab.training.run import run

QUICK = ["logger=none", "trainer.enable_progress_bar=false", "data.batch_size=32"]


def diagnose(make_config, mnist_root, *overrides: str) -> tuple[dict, dict, dict]:
    result = run(make_config(*QUICK, f"data.root={mnist_root}", *overrides))
    final, history = result["diagnostics"], result["diagnostics_history"]
    print(f"\n{' '.join(overrides)}: {result['verdict']} ({result['verdict_reason']})")
    for key in (
        "blob/ev",
        "blob/r",
        "blob/d",
        "blob/mse",
        "blob/mean_image/mse",
        "collapse/norm_ratio/W1",
        "collapse/change/W1",
        "collapse/shrunk_units/W1",
        "units/saturation/h1",
        "units/exact_bound/out",
        "rank/code",
        "rank/W1",
        "grads/update_ratio/W1",
    ):
        print(f"  {key:26s} " + " ".join(f"{v:9.4g}" for v in history[key]))
    return result, final, history


@pytest.mark.slow
def test_seed_network_with_mse_is_healthy(make_config, mnist_root):
    result, final, history = diagnose(
        make_config, mnist_root, "loss=mse", "data.train_size=20000", "trainer.max_epochs=6"
    )
    assert result["verdict"] == "healthy"
    assert final["blob/ev"] > 0.3  # 0.48 when written
    assert history["blob/ev"][-1] > history["blob/ev"][-3] + 0.05  # still improving
    assert final["blob/r"] > 0.2 and final["blob/d"] > 0.2  # the output follows the input
    assert final["blob/mse"] < 0.75 * final["blob/mean_image/mse"]
    assert final["collapse/norm_ratio/W1"] > 1.5  # W1 grew (3.9)
    assert final["collapse/shrunk_units/W1"] == 0.0
    assert final["rank/code"] > 5  # codes vary in many directions (18)
    assert final["blob/mean_image/ev"] == pytest.approx(0.0, abs=1e-6)


@pytest.mark.slow
def test_large_coupled_l2_penalty_collapses_the_first_layer(make_config, mnist_root):
    """H7: lambda ||W||^2 with lambda = 0.01 against a per-pixel mean BCE drives W -> 0."""
    result, final, history = diagnose(
        make_config,
        mnist_root,
        "loss=bce",
        "l2_penalty=0.01",
        "data.train_size=10000",
        "trainer.max_epochs=3",
    )
    assert result["verdict"] in ("collapsed", "blob")
    assert result["verdict"] == "collapsed"  # W1 shrank: the more specific verdict wins
    assert final["collapse/norm_ratio/W1"] < 0.05  # 2e-4 when written
    assert history["collapse/norm_ratio/W1"][0] == pytest.approx(1.0)
    assert final["collapse/shrunk_units/W1"] == 1.0
    assert final["blob/r"] < 0.01 and final["blob/ev"] < 0.1  # the output ignores the input
    assert final["rank/code"] < 1.1  # every image gets the same code


@pytest.mark.slow
def test_saturating_init_with_small_sgd_steps_is_frozen(make_config, mnist_root):
    """H1 + H2: N(0, 1) weights and biases saturate the sigmoids; SGD at lr 0.01 barely moves."""
    result, final, _ = diagnose(
        make_config,
        mnist_root,
        "loss=bce",
        "init=normal",
        "optimizer=sgd",
        "optimizer.lr=0.01",
        "data.train_size=10000",
        "trainer.max_epochs=1",
    )
    assert result["verdict"] == "frozen"
    assert final["collapse/change/W1"] < 0.01 and final["collapse/change/W4"] < 0.01
    assert final["units/saturation/h1"] > 0.5  # 61% of |pre-activations| > 4.6
    assert final["units/exact_bound/out"] > 1000  # float32 outputs exactly 0 or 1
    assert final["blob/ev"] < 0  # worse than the mean image
