"""Each cause rule of the doctor on a hand-built record whose answer is known: one where it
must fire (with its evidence and fix) and one where it must not."""

from __future__ import annotations

import pytest

from aelab.doctor import causes
from aelab.doctor.diagnose import describe, diagnose
from aelab.doctor.view import Run

SIGMOID = {"h1": "encoder.stages.0.activation (Sigmoid)", "h2": "encoder.stages.1.activation "
           "(Sigmoid)"}


def make(symptom: str = "blob", config: dict | None = None, choices: dict | None = None,
         preflight: dict | None = None, train: dict | None = None, **history: list[float]) -> Run:
    """A Run whose history keys are given with `__` for `/` (blob__ev -> blob/ev)."""
    hist = {k.replace("__", "/"): v for k, v in history.items()}
    return Run(symptom, "diverged" if symptom == "diverged" else "completed", hist,
               train or {}, config or {}, choices or {}, preflight, SIGMOID)


# ---------------------------------------------------------------- loss_misspecified

H4_PREFLIGHT = {"problems": ["the input is not loss=bce_naive_positive's minimum: the all-white "
                             "image scores 0.0015 per pixel against 0.066"],
                "numbers": {"loss_at_input": 0.066, "best_candidate": "all-white image",
                            "best_candidate_loss": 0.0015, "target_min": 0.0, "target_max": 1.0}}


def test_loss_misspecified_fires_on_a_failed_preflight():
    found = causes.loss_misspecified(make("blob", preflight=H4_PREFLIGHT,
                                          choices={"loss": "bce_naive_positive"}))
    assert found.cause == "loss_misspecified" and found.fix == ["loss=bce"]
    assert found.evidence["best_candidate"] == "all-white image"
    assert found.evidence["loss_at_input"] == 0.066


def test_loss_misspecified_targets_out_of_domain_fix_the_normalisation():
    report = {"problems": ["the targets span [-0.42, 2.8], outside the [0, 1]"],
              "numbers": {"target_min": -0.42, "target_max": 2.8, "unbounded_pixel_share": 0.9}}
    found = causes.loss_misspecified(make("blob", preflight=report, choices={
        "loss": "bce", "normalization": "standard"}))
    assert found.fix[0] == "normalization=unit"


def test_loss_misspecified_silent_when_the_preflight_passed_or_the_run_is_healthy():
    assert causes.loss_misspecified(make("blob", preflight={"problems": [], "numbers": {}})) is None
    assert causes.loss_misspecified(make("healthy", preflight=H4_PREFLIGHT)) is None


# ---------------------------------------------------------------- penalty


def test_penalty_fires_when_its_gradient_outweighs_the_data_at_a_shrinking_w1():
    run = make("collapsed", config={"l2_penalty": 1e-3},
               grads__data__W1=[6e-4, 7e-4, 5e-4], grads__penalty__W1=[3.5e-3, 7e-4, 5e-4],
               collapse__norm_ratio__W1=[1.0, 0.08, 0.05, 0.03])
    found = causes.penalty(run)
    assert found.fix == ["l2_penalty=0"]
    assert found.evidence["grads/data/W1"] == 6e-4 and found.evidence["grads/penalty/W1"] == 3.5e-3
    assert found.evidence["penalty/data"] == pytest.approx(5.833, rel=1e-3)


def test_penalty_names_weight_decay():
    run = make("collapsed", config={"optimizer": {"weight_decay": 0.01}},
               grads__data__W1=[1e-3], grads__penalty__W1=[2e-3], collapse__norm_ratio__W1=[1, 0.2])
    assert causes.penalty(run).fix == ["optimizer.weight_decay=0"]


def test_penalty_silent_when_the_data_gradient_wins_or_w1_keeps_its_norm():
    weak = make("blob", config={"l2_penalty": 1e-5}, grads__data__W1=[1e-3, 1e-3],
                grads__penalty__W1=[1e-4, 2e-4], collapse__norm_ratio__W1=[1.0, 0.7, 0.6])
    assert causes.penalty(weak) is None
    kept = make("blob", config={"l2_penalty": 1e-5}, grads__data__W1=[1e-4],
                grads__penalty__W1=[2e-4], collapse__norm_ratio__W1=[1.0, 1.3])
    assert causes.penalty(kept) is None
    assert causes.penalty(make("healthy", config={"l2_penalty": 1e-3}, grads__data__W1=[1e-4],
                               grads__penalty__W1=[1e-2], collapse__norm_ratio__W1=[1, .1])) is None


# ---------------------------------------------------------------- saturation, dead units


def test_saturation_names_the_layer():
    run = make("frozen", choices={"activation": "sigmoid"}, units__saturation__h1=[0.0, 0.1],
               units__saturation__h2=[0.0, 0.93], grads__norm__W1=[1e-3, 1e-9])
    found = causes.saturation(run)
    assert found.evidence["layer"].startswith("h2 (encoder.stages.1.activation")
    assert found.fix == ["activation=relu"] and found.evidence["grads/norm/W1 last"] == 1e-9


def test_saturation_silent_below_half():
    assert causes.saturation(make("blob", units__saturation__h1=[0.0, 0.45])) is None


def test_dead_units_names_the_layer_and_leaves_the_saturated_kind_alone():
    run = make("frozen", choices={"activation": "relu"}, units__dead__h2=[0.0, 1.0],
               units__dead__h1=[0.0, 0.2])
    found = causes.dead_units(run)
    assert found.evidence == {"units/dead/h2": 1.0, "layer": "h2 (encoder.stages.1.activation "
                                                             "(Sigmoid))"}
    assert found.fix == ["activation=leaky_relu"]
    assert causes.dead_units(make("blob", units__dead__h1=[0.0, 0.3])) is None
    assert causes.saturation(run) is None


# ---------------------------------------------------------------- step size


def test_step_too_large_on_divergence_and_on_a_rising_loss():
    diverged = causes.step_too_large(make("diverged", config={"optimizer": {"lr": 0.1}}))
    assert diverged.fix == ["optimizer.lr=0.01"]
    summed = make("diverged", config={"optimizer": {"lr": 0.01},
                                      "loss": {"reduction": "batch_sum"}})
    assert causes.step_too_large(summed).fix == ["loss.reduction=mean", "optimizer.lr=0.001"]
    rising = make("blob", config={"optimizer": {"lr": 0.03}},
                  train={"train/loss": [0.07, 0.05, 0.09, 0.08]})
    assert causes.step_too_large(rising).evidence["epochs_loss_rose"] == 1


def test_step_too_large_on_large_updates_but_not_on_a_collapsing_w1():
    big = make("blob", config={"optimizer": {"lr": 0.1}}, train={"train/loss": [0.1, 0.09]},
               grads__update_ratio__W1=[0.3, 0.2], grads__update_ratio__W2=[0.3, 0.25],
               grads__update_ratio__W3=[0.2, 0.2], collapse__norm_ratio__W1=[1.0, 1.2, 1.3])
    assert causes.step_too_large(big).evidence["grads/update_ratio median"] == 0.3
    shrinking = make("collapsed", config={"optimizer": {"lr": 1e-3}},
                     train={"train/loss": [0.1, 0.09]}, grads__update_ratio__W1=[2.0, 2.0],
                     grads__update_ratio__W2=[0.5, 0.5], collapse__norm_ratio__W1=[1, 0.01, 0.001])
    assert causes.step_too_large(shrinking) is None
    calm = make("blob", train={"train/loss": [0.1, 0.09, 0.085]},
                grads__update_ratio__W1=[3e-3, 2e-3])
    assert causes.step_too_large(calm) is None


def test_step_too_small_when_weights_barely_moved_or_on_the_plateau():
    sgd = {"optimizer": {"_target_": "torch.optim.SGD", "lr": 0.001}}
    still = make("blob", config=sgd, collapse__change__W1=[0, 0.01], grads__update_ratio__W1=[1e-5],
                 grads__update_ratio__W2=[2e-5])
    assert causes.step_too_small(still).fix == ["optimizer=adam", "optimizer.lr=0.01"]
    plateau = make("blob", config={"optimizer": {"lr": 1e-3}}, collapse__change__W1=[0, 1.9],
                   grads__update_ratio__W1=[3e-3], blob__d=[0, 0.003],
                   train={"train/loss": [0.0677, 0.0675, 0.0674]})
    assert causes.step_too_small(plateau).fix == ["optimizer.lr=0.01"]
    learning = make("blob", collapse__change__W1=[0, 1.9], grads__update_ratio__W1=[3e-3],
                    blob__d=[0, 0.05], train={"train/loss": [0.0677, 0.06, 0.05]})
    assert causes.step_too_small(learning) is None
    saturated = make("blob", config=sgd, collapse__change__W1=[0, 0.01],
                     grads__update_ratio__W1=[1e-5], units__saturation__h1=[0.0, 0.8])
    assert causes.step_too_small(saturated) is None


# ---------------------------------------------------------------- init scale


def test_init_scale_from_the_initial_gain():
    run = make("frozen", choices={"init": "normal"}, config={"init": {"std": 1.0}},
               weights__gain__W1=[28.0, 27.0], weights__gain__W2=[10.0, 10.0],
               units__saturation__h1=[0.9, 0.9])
    found = causes.init_scale(run)
    assert found.fix == ["init=default"] and "too large" in found.explanation
    assert found.evidence["weights/gain/W1 at init"] == 28.0
    assert found.evidence["saturated at init"] == {"h1": 0.9}
    tiny = make("blob", choices={"init": "normal"}, weights__gain__W1=[0.03],
                weights__gain__W2=[0.01])
    assert "too small" in causes.init_scale(tiny).explanation


def test_init_scale_silent_for_the_usual_inits():
    for gain in (0.577, 1.0, 1.414):
        run = make("blob", choices={"init": "default"}, weights__gain__W1=[gain, 2 * gain])
        assert causes.init_scale(run) is None


# ---------------------------------------------------------------- posterior collapse


def test_posterior_collapse_names_beta_sigma_squared_for_a_gaussian():
    run = make("posterior_collapse", config={"model": {"beta": 4.0}, "loss": {
        "_target_": "aelab.losses.MSE", "sigma": 1.0}}, latent__kl_total=[5.0, 0.2],
        latent__active_units=[3, 1], latent__kl__z1=[1, 0.15], latent__kl__z2=[1, 0.05])
    found = causes.posterior_collapse(run)
    assert found.evidence["beta x sigma^2"] == 4.0 and found.evidence["max KL of one dimension"] \
        == 0.15
    assert found.fix == ["loss.sigma=0.1", "model.beta=1"]


def test_posterior_collapse_lever_beta_and_silent_when_the_code_carries_information():
    bern = make("posterior_collapse", config={"model": {"beta": 20.0}, "loss": {
        "_target_": "aelab.losses.BCE"}}, latent__kl_total=[0.3])
    assert causes.posterior_collapse(bern).fix == ["model.beta=1"]
    assert causes.posterior_collapse(make("healthy", latent__kl_total=[25.0])) is None


# ---------------------------------------------------------------- the diagnosis


def test_two_causes_at_once_ranked_loss_first():
    history = {"blob/ev": [-2, -9.3], "collapse/norm_ratio/W1": [1, 0.01, 1e-5],
               "grads/data/W1": [1e-9, 1e-10], "grads/penalty/W1": [1e-4, 1e-6]}
    result = {"status": "completed", "diagnostics_history": history, "preflight": H4_PREFLIGHT,
              "choices": {"loss": "bce_naive_positive"}}
    found = diagnose(result, {"l2_penalty": 1e-5})
    assert found["symptom"] == "collapsed"
    assert [c["cause"] for c in found["causes"]] == ["loss_misspecified", "penalty"]
    assert "loss_misspecified" in describe(found) and "l2_penalty=0" in describe(found)


def test_a_healthy_run_has_no_cause_and_no_record_is_unknown():
    healthy = {"status": "completed", "diagnostics_history": {
        "blob/ev": [0, 0.4, 0.6], "epoch": [0, 1, 2], "units/saturation/h1": [0, 0.9, 0.95]},
        "preflight": H4_PREFLIGHT}
    found = diagnose(healthy, {"l2_penalty": 1e-3})
    assert found["symptom"] == "healthy" and found["causes"] == []
    assert diagnose({"status": "completed"}, None)["symptom"] == "unknown"
