"""Every loss x activation x normalisation either trains a step or is refused clearly."""

import math

import pytest

from aelab.errors import ConfigError
from aelab.training.run import run

from conftest import TINY

LOSSES = ["mse", "bce", "l1", "huber"]
ACTIVATIONS = ["sigmoid", "relu", "tanh", "leaky_relu", "elu", "gelu"]
NORMALIZATIONS = ["unit", "standard", "symmetric", "binary", "stochastic_binary", "dequantized"]
REFUSED = {("bce", "standard"), ("bce", "symmetric")}
MODELS = {"seed": [], "conv": ["model.channels=[4,8]", "model.code_dim=8"]}  # a small conv net


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("normalization", NORMALIZATIONS)
@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("loss", LOSSES)
def test_combination_trains_one_step_or_is_refused(make_config, loss, activation, normalization,
                                                    model):
    cfg = make_config(*TINY, f"model={model}", *MODELS[model], f"loss={loss}",
                      f"activation={activation}", f"normalization={normalization}",
                      "logger=none", "+trainer.max_steps=1")
    if (loss, normalization) in REFUSED:
        with pytest.raises(ConfigError, match=f"loss={loss} needs targets in \\[0, 1\\]"):
            run(cfg)
        return
    result = run(cfg)
    assert result["status"] == "completed"
    assert math.isfinite(result["test"]["mse"]) and math.isfinite(result["test"]["bce"])


@pytest.mark.parametrize(
    ("normalization", "output", "message"),
    [("symmetric", "sigmoid", "cannot reach the targets"),
     ("standard", "relu", "cannot reach the targets"),
     ("unit", "tanh", None)],
)
def test_output_activation_must_reach_the_targets(make_config, normalization, output, message):
    cfg = make_config(*TINY, f"normalization={normalization}", f"model.output_activation={output}",
                      "logger=none", "+trainer.max_steps=1")
    if message is None:
        assert run(cfg)["status"] == "completed"
    else:
        with pytest.raises(ConfigError, match=message):
            run(cfg)


def test_bce_needs_its_sigmoid_output(make_config):
    cfg = make_config(*TINY, "loss=bce", "model.output_activation=identity")
    with pytest.raises(ConfigError, match="computed from logits for a sigmoid output"):
        run(cfg)


@pytest.mark.parametrize(("normalization", "expected"),
                         [("unit", "Sigmoid"), ("symmetric", "Tanh"), ("standard", "Identity")])
def test_auto_output_activation_follows_the_targets(normalization, expected):
    from aelab.data.domains import REAL, SYMMETRIC, UNIT
    from aelab.models import OUTPUT_ACTIVATIONS, auto_output_activation

    target = {"unit": UNIT, "symmetric": SYMMETRIC, "standard": REAL}[normalization]
    name = auto_output_activation(target)
    assert type(OUTPUT_ACTIVATIONS[name][0]()).__name__ == expected
