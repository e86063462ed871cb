"""Gradient masking on trained defenses (evaluation.masking) on hand-made per-clip eps*: the gain ratio is exact
where every eps* scales by one factor, and the checks warn exactly when the weaker attack credits a gain the
stronger (or gradient-free) one does not find."""
from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest
import torch

from evaluation import stats
from evaluation.harness import evaluate_attack, summarize
from evaluation.masking import check_trained_masking, check_transfer, gain_ratio
from known_eps import Threshold, line_victim, waves_with_thresholds

pytestmark = pytest.mark.timeout(120)
N = 30
BASE = np.linspace(0.1, 0.5, N)  # the original model's eps* per clip
FAMILIES = {"fgsm": "single_step", "bim": "iterative", "deepfool": "minimum_norm", "nes": "black_box",
            "noise": "baseline"}


@pytest.fixture(scope="module")
def template():  # type: ignore[no-untyped-def]
    thresholds = [0.3] * N
    return evaluate_attack(line_victim(), Threshold(), waves_with_thresholds(thresholds),
                           torch.zeros(N, dtype=torch.long), eps_max=1.0, search_eps_max=2.0, n_budgets=3,
                           name="template")


def scaled(template, name: str, factor: float | np.ndarray):  # type: ignore[no-untyped-def]
    """The template with eps* = factor x BASE on every clip (the same base set)."""
    star = torch.tensor(BASE * factor, dtype=torch.float64)
    out = replace(template, attack=name, eps_star=star, eps_lower=star / 2)
    out.summary = summarize(out)
    return out


def models(template, original: dict[str, float], defended: dict[str, float]):  # type: ignore[no-untyped-def]
    return ({k: scaled(template, k, f) for k, f in defended.items()},
            {k: scaled(template, k, f) for k, f in original.items()})


def test_gain_ratio_of_uniformly_scaled_eps_is_exact() -> None:
    measured = (BASE * 3.0, BASE)
    reference = (BASE * 1.2, BASE)
    found = gain_ratio(measured, reference, n_boot=200)
    assert found.value == pytest.approx(2.5) and found.low == pytest.approx(2.5) and found.high == pytest.approx(2.5)
    with pytest.raises(ValueError, match="same clips"):
        gain_ratio(measured, (BASE[:-1], BASE[:-1]))


def test_single_step_gain_that_multi_step_attacks_remove_warns(template) -> None:  # type: ignore[no-untyped-def]
    original = {"fgsm": 2.0, "bim": 1.0, "deepfool": 1.1}
    healthy = check_trained_masking(*models(template, original, {"fgsm": 3.0, "bim": 1.5, "deepfool": 1.65}),
                                    FAMILIES, n_boot=200)
    assert [(r.name, r.status) for r in healthy] == [("gradient_masking.single_step_wave_l2", "pass")]
    assert healthy[0].detail.startswith("eps_r by fgsm / eps_r by bim,deepfool: 1 [1, 1] over 30 clips")
    # FGSM-mix's textbook case: FGSM needs 3x more on the defended model, BIM only 1.2x (DeepFool never better)
    masked = check_trained_masking(*models(template, original, {"fgsm": 6.0, "bim": 1.2, "deepfool": 2.0}),
                                   FAMILIES, n_boot=200)[0]
    assert masked.status == "warn" and "2.5 [2.5, 2.5]" in masked.detail
    assert masked.detail.endswith("gain multi-step attacks remove")


def test_white_box_gain_a_gradient_free_attack_removes_warns(template) -> None:  # type: ignore[no-untyped-def]
    original = {"bim": 1.0, "nes": 2.0, "noise": 5.0}
    healthy = check_trained_masking(*models(template, original, {"bim": 1.5, "nes": 3.0, "noise": 5.0}),
                                    FAMILIES, n_boot=200)
    assert [(r.name, r.status) for r in healthy] == [("gradient_masking.black_box_wave_l2", "pass")]
    # the defended model resists BIM 1.5x more, NES not at all: its gain is invisible to a gradient-free attack
    masked = check_trained_masking(*models(template, original, {"bim": 1.5, "nes": 2.0, "noise": 5.0}),
                                   FAMILIES, n_boot=200)[0]
    assert masked.status == "warn" and masked.detail.startswith("eps_r by bim / eps_r by nes: 1.5 [1.5, 1.5]")
    # a black-box attack that finds a larger gain than the white-box one is no sign of masking
    weaker_nes = check_trained_masking(*models(template, original, {"bim": 1.5, "nes": 4.0}), FAMILIES, n_boot=200)
    assert weaker_nes[0].status == "pass"


def test_a_gradient_free_attack_that_mostly_fails_is_undetermined(template) -> None:  # type: ignore[no-untyped-def]
    """NES breaking few of the defended model's clips within its search range: its eps* are mostly the ceiling, so
    its gain is capped, and a white-box gain above it is no sign of masking (FSDD's FGSM-mix models, 2026-12-04)."""
    original = {"bim": 1.0, "nes": 2.0}
    defended, reference = models(template, original, {"bim": 1.5, "nes": 2.0})
    unbroken = torch.arange(N) >= N // 5  # NES broke a fifth of the defended model's clips
    defended["nes"] = replace(defended["nes"], eps_star=torch.where(unbroken, math.inf, defended["nes"].eps_star))
    record = check_trained_masking(defended, reference, FAMILIES, n_boot=200)[0]
    assert (record.name, record.status) == ("gradient_masking.black_box_wave_l2", "pass")
    assert record.detail.startswith("not determined: nes broke 20% of the defended model's base set (< 50%)")
    # the same gains with every clip broken warn (the test above)
    assert check_trained_masking(*models(template, original, {"bim": 1.5, "nes": 2.0}), FAMILIES,
                                 n_boot=200)[0].status == "warn"


def test_noisy_gains_within_the_interval_pass(template) -> None:  # type: ignore[no-untyped-def]
    rng = np.random.default_rng(0)
    jitter = np.exp(rng.normal(0.0, 0.3, N))  # per-clip gains scattered around 1.5 for both attacks
    defended = {"fgsm": scaled(template, "fgsm", 1.5 * jitter), "bim": scaled(template, "bim", 1.5 * jitter[::-1])}
    original = {"fgsm": scaled(template, "fgsm", 1.0), "bim": scaled(template, "bim", 1.0)}
    record = check_trained_masking(defended, original, FAMILIES, n_boot=500)[0]
    assert record.status == "pass"
    low, high = (float(v) for v in record.detail.split("[")[1].split("]")[0].split(","))
    assert low < 1 < high


def test_what_the_checks_leave_out_is_said(template) -> None:  # type: ignore[no-untyped-def]
    original = {"bim": 1.0, "noise": 5.0}
    missing = check_trained_masking(*models(template, original, {"bim": 1.5, "noise": 5.0}), FAMILIES)
    assert [(r.name, r.status) for r in missing] == [("gradient_masking.trained", "warn")]
    assert "not run" in missing[0].detail
    targeted = {k: replace(v, targeted=True) for k, v in models(template, {"fgsm": 1.0}, {"fgsm": 2.0})[0].items()}
    defended, original = models(template, {"fgsm": 1.0, "bim": 1.0}, {"fgsm": 2.0, "bim": 1.0})
    assert check_trained_masking({**defended, **targeted}, original, FAMILIES)[0].status == "warn"
    keep = torch.arange(N) < stats.N_MIN - 1  # the other clips misclassified: a base set below N_MIN
    few = {k: replace(v, base=keep, eps_star=v.eps_star[keep], eps_lower=v.eps_lower[keep])
           for k, v in defended.items()}
    small = check_trained_masking(few, {k: few[k] for k in few}, FAMILIES)
    assert small[0].status == "pass" and small[0].detail.startswith(f"not determined: {stats.N_MIN - 1} clips")


def test_transferred_examples_that_beat_the_white_box_attack_warn(template) -> None:  # type: ignore[no-untyped-def]
    white = scaled(template, "ensemble_wave_l2", 1.0)
    everywhere = torch.ones(N, dtype=torch.bool)
    sizes = torch.tensor(BASE, dtype=torch.float64)
    beaten = check_transfer(white, {"bim": (everywhere, 0.5 * sizes)})
    assert beaten.name == "gradient_masking.transfer_wave_l2" and beaten.status == "warn"
    assert beaten.detail.startswith("of 30 clips, 30 fooled by transferred examples; those smaller than the "
                                    "white-box eps* on 30 clips, larger (or failing) on 0")
    assert beaten.detail.endswith("beat the white-box attacks on the defended model")
    # larger transferred perturbations, or smaller ones that do not fool the model, or a few wins, are no evidence
    assert check_transfer(white, {"bim": (everywhere, 2 * sizes)}).status == "pass"
    nowhere = torch.zeros(N, dtype=torch.bool)
    assert check_transfer(white, {"bim": (nowhere, 0.5 * sizes)}).status == "pass"
    few = torch.where(torch.arange(N) < 3, 0.5, 2.0).double() * sizes  # transfer wins 3 clips, white-box 27
    assert check_transfer(white, {"bim": (everywhere, few)}).status == "pass"
    # within the white-box eps*'s resolution (2 rtol) neither wins
    close = check_transfer(white, {"bim": (everywhere, sizes / (1 + white.rtol))})
    assert close.status == "pass" and "on 0 clips, larger (or failing) on 0" in close.detail
    # per clip the smallest transferred example that fools counts: one attack's small ones suffice
    assert check_transfer(white, {"bim": (everywhere, 2 * sizes), "cw": (everywhere, 0.5 * sizes)}).status == "warn"
