"""Every loss x activation x normalisation x model is built and its gradient descends, or it
is refused clearly; a few of them train for real and beat the mean image."""

import math

import pytest
import torch

from aelab.errors import ConfigError
from aelab.training.build import build
from aelab.training.run import run

from conftest import TINY

LOSSES = ["mse", "bce", "l1", "huber"]
ACTIVATIONS = ["sigmoid", "relu", "tanh", "leaky_relu", "elu", "gelu"]
NORMALIZATIONS = ["unit", "standard", "symmetric", "binary", "stochastic_binary", "dequantized"]
REFUSED = {("bce", "standard"), ("bce", "symmetric")}
MODELS = {"seed": [], "conv": ["model.channels=[4,8]", "model.code_dim=8"]}  # a small conv net


def descent_holds(module, batch: torch.Tensor) -> tuple[float, float, float]:
    """(f, f after a small step against the gradient, the first-order decrease) of the
    objective on `batch`: a step of size eta = 1e-3 f / ||g||^2 must lower f by about
    eta ||g||^2 = 1e-3 f if the gradient is the objective's (Armijo with c = 1/2)."""
    params = [p for p in module.parameters() if p.requires_grad]
    f, _ = module.objective(batch)
    grads = torch.autograd.grad(f, params, allow_unused=True)
    grads = [torch.zeros_like(p) if g is None else g for p, g in zip(params, grads)]
    g2 = sum(float(g.square().sum()) for g in grads)
    eta = 1e-3 * abs(f.item()) / g2
    with torch.no_grad():
        for p, g in zip(params, grads):
            p -= eta * g
        after, _ = module.objective(batch)
    return f.item(), after.item(), eta * g2


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("normalization", NORMALIZATIONS)
@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("loss", LOSSES)
def test_combination_builds_and_descends_or_is_refused(make_config, loss, activation,
                                                       normalization, model):
    """Each of the 288 combinations is built as a run builds it; on its first training batch
    the objective is finite and a small step against its gradient lowers it by the
    first-order amount (a gradient that is not the objective's, or none, fails this)."""
    cfg = make_config(*TINY, f"model={model}", *MODELS[model], f"loss={loss}",
                      f"activation={activation}", f"normalization={normalization}")
    if (loss, normalization) in REFUSED:
        with pytest.raises(ConfigError, match=f"loss={loss} needs targets in \\[0, 1\\]"):
            build(cfg)
        return
    torch.manual_seed(0)
    parts = build(cfg)
    batch = next(iter(parts.data.train_dataloader()))[0]
    f, after, decrease = descent_holds(parts.module, batch)
    assert math.isfinite(f) and decrease > 0
    assert after < f - 0.5 * decrease, (f, after, decrease)


LEARNERS = [  # (overrides, what is varied): 30 epochs on 2048 synthetic images
    (["activation=relu", "loss=mse"], "seed mse"),
    (["activation=relu", "loss=bce"], "seed bce"),
    (["activation=tanh", "loss=l1", "normalization=symmetric"], "l1 on [-1, 1]"),
    (["activation=elu", "loss=huber", "normalization=standard"], "huber on standardised"),
    (["model=conv", *MODELS["conv"], "activation=relu", "loss=mse"], "conv"),
    (["activation=gelu", "loss=bce", "normalization=binary"], "bce on binary"),
]


@pytest.mark.parametrize(("overrides", "what"), LEARNERS, ids=[w for _, w in LEARNERS])
def test_a_few_combinations_learn(make_config, overrides, what):
    """Real trainings: the training loss falls and the reconstruction beats the mean image
    (its MSE on the probe set below the mean image's, EV > 0)."""
    tiny = [o for o in TINY if not o.startswith(("data.train_size", "trainer.max_epochs"))]
    result = run(make_config(*tiny, *overrides, "data.train_size=2048", "trainer.max_epochs=30",
                             "logger=none"))
    assert result["status"] == "completed"
    loss = result["history"]["train/loss"]
    assert loss[-1] < 0.8 * loss[0], loss
    diagnostics = result["diagnostics"]
    assert diagnostics["blob/mse"] < diagnostics["blob/mean_image/mse"], diagnostics
    assert diagnostics["blob/ev"] > 0.1


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
