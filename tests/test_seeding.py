"""Same seed and config on CPU: identical metrics; another seed: different ones."""

from aelab.training.run import run

from conftest import TINY


def test_same_seed_same_metrics_other_seed_differs(make_config):
    overrides = [*TINY, "logger=none", "normalization=stochastic_binary", "trainer.max_epochs=2"]
    a = run(make_config(*overrides, "seed=0", name="a"))
    b = run(make_config(*overrides, "seed=0", name="b"))
    c = run(make_config(*overrides, "seed=1", name="c"))
    assert a["test"] == b["test"] and a["history"] == b["history"]
    assert a["test"]["mse"] != c["test"]["mse"]
