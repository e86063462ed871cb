"""The evaluation harness against attacks whose ε* is known exactly, and on the tiny trained victim."""
from __future__ import annotations

import math
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from attacks.base import Attack, RunOutput
from black_box import CountRows
from evaluation import metrics as M
from evaluation.harness import budget_grid, epsilon_ratio, evaluate_attack
from known_eps import MinNorm, Threshold, line_victim, waves_with_thresholds
from tiny import tones, trained_victim

THRESHOLDS = [0.3, 0.6, 1.2, 5.0, -0.4]  # the last one is misclassified: not in the base set
LABELS = torch.zeros(5, dtype=torch.long)


def test_budget_grid() -> None:
    assert budget_grid(2.0, 4).tolist() == [0.25, 0.5, 1.0, 2.0]
    assert budget_grid(2.0, 4, "linear").tolist() == [0.5, 1.0, 1.5, 2.0]
    with pytest.raises(ValueError, match="grid"):
        budget_grid(2.0, 4, "log")
    with pytest.raises(ValueError, match="eps_max"):
        budget_grid(math.inf, 4)


@pytest.mark.parametrize("chunk", [1, 3, 8])
def test_threshold_attack_recovers_eps_star_within_tolerance(chunk: int) -> None:
    eps_max, rtol = 2.0, 0.05
    ev = evaluate_attack(line_victim(), Threshold(), waves_with_thresholds(THRESHOLDS), LABELS, eps_max=eps_max,
                         n_budgets=8, rtol=rtol, batch_size=2, sweep_chunk=chunk)
    thr = torch.tensor(THRESHOLDS[:4], dtype=torch.float64)
    assert ev.base.tolist() == [True] * 4 + [False]
    broken = thr < eps_max
    assert ev.success.tolist() == broken.tolist() and ev.eps_star[3] == math.inf
    assert (ev.eps_lower[broken] <= thr[broken] + 1e-6).all() and (thr[broken] < ev.eps_star[broken]).all()
    assert (ev.eps_star[broken] - ev.eps_lower[broken] <= rtol * ev.eps_star[broken]).all()
    tol = rtol * eps_max
    # the stored outputs come from the run at eps*, unbroken ones from the run at eps_max
    assert ev.iterations.tolist() == [round(1000 * e) for e in ev.eps_star[:3].tolist()] + [2000]
    assert torch.allclose(ev.norms[:3], ev.eps_star[:3], atol=1e-5)
    s = ev.summary
    assert s["base_size"] == 4 and s["num_examples"] == 5
    assert s["clean_accuracy"] == pytest.approx(0.8) and s["adv_accuracy"] == pytest.approx(0.2)
    assert s["fooling_auc"] == pytest.approx((1.7 + 1.4 + 0.8) / 8, abs=tol)
    assert s["fr_at_eps_max"] == 0.75 and s["eps_090"] == math.inf and s["eps090_reached"] == 0.0
    assert s["mean_eps_star"] == pytest.approx(0.7, rel=rtol) and s["eps_star_resolution"] <= rtol
    assert s["eps_star_rtol"] == rtol and s["eps_floor_share"] == 0.0
    snr = 20 * torch.log10(torch.tensor(THRESHOLDS[:3]).abs() / ev.eps_star[:3])
    assert s["snr_db"] == pytest.approx(float(snr.mean()), abs=1e-4)
    assert s["median_iterations"] == float(M.median(ev.iterations[:3]))
    assert s["conf_adv_label"] > 0.5 and s["conf_true_label"] < 0.5
    assert ev.confusion(False).tolist() == [[4, 1], [0, 0]] and ev.confusion(True).tolist() == [[1, 4], [0, 0]]


def test_cascade_never_reattacks_broken_examples_and_counts_calls() -> None:
    attack = Threshold()
    thresholds = [0.3, 0.6, 1.2, 5.0]
    eps_max, n_bisect = 2.0, 3
    ev = evaluate_attack(line_victim(), attack, waves_with_thresholds(thresholds), torch.zeros(4, dtype=torch.long),
                         eps_max=eps_max, n_budgets=4, n_bisect=n_bisect, rtol=0.0, batch_size=64, sweep_chunk=1)
    grid = budget_grid(eps_max, 4).tolist()  # 0.25, 0.5, 1, 2
    first_hit = {0.3: 0.5, 0.6: 1.0, 1.2: 2.0}
    attacked: dict[float, list[float]] = {t: [] for t in thresholds}
    for thr_list, eps in attack.calls:
        for t in thr_list:
            attacked[round(t, 4)].append(eps)
    for t, hit in first_hit.items():
        assert max(attacked[t]) == hit  # never attacked above its first succeeding budget
        assert len(attacked[t]) == grid.index(hit) + 1 + n_bisect
    assert attacked[5.0] == grid  # never broken: each budget once, no bisection
    # sweep: 4 calls with shrinking sets; bisection: the three intervals differ -> 3 calls a step
    assert [len(c[0]) for c in attack.calls[:4]] == [4, 4, 3, 2] and len(attack.calls) == 4 + 3 * n_bisect
    assert ev.attack_calls == len(attack.calls)
    assert ev.total_queries.tolist() == [sum(round(1000 * e) for e in attacked[t]) for t in thresholds]
    raw = ev.sweep_success.T.tolist()
    assert raw[0] == [0, 1, -1, -1] and raw[3] == [0, 0, 0, 0]


def test_minimum_norm_attack_runs_once_per_batch() -> None:
    attack = MinNorm()
    ev = evaluate_attack(line_victim(), attack, waves_with_thresholds(THRESHOLDS), LABELS, eps_max=2.0,
                         n_budgets=4, batch_size=3)
    assert len(attack.calls) == 2 and all(eps is None for _, eps in attack.calls)
    expected = torch.tensor([0.303, 0.606, 1.212, math.inf], dtype=torch.float64)
    assert torch.allclose(ev.eps_star, expected, rtol=1e-5)
    assert ev.sweep_success.T.tolist()[1] == [0, 0, 1, 1]  # 0.606 <= eps at 1.0 and 2.0
    assert ev.summary["fr_at_eps_max"] == 0.75


def test_targets_are_checked() -> None:
    waves = waves_with_thresholds(THRESHOLDS)
    with pytest.raises(ValueError, match="targets given"):
        evaluate_attack(line_victim(), Threshold(), waves, LABELS, eps_max=1.0, targets=1 - LABELS)
    attack = Threshold()
    attack.targeted = True
    with pytest.raises(ValueError, match="targets missing"):
        evaluate_attack(line_victim(), attack, waves, LABELS, eps_max=1.0)
    with pytest.raises(ValueError, match="target equals the true label"):
        evaluate_attack(line_victim(), attack, waves, LABELS, eps_max=1.0, targets=LABELS.clone())


def test_epsilon_ratio_from_evaluations_and_summaries() -> None:
    waves = waves_with_thresholds([0.2, 0.4, 0.6, 0.8, 1.0, 1.2, 1.4, 1.6, 1.8, 2.0])
    labels = torch.zeros(10, dtype=torch.long)
    kw = dict(eps_max=8.0, n_budgets=6, n_bisect=6)
    original = evaluate_attack(line_victim(), Threshold(), waves, labels, **kw)
    defended = evaluate_attack(line_victim(), Threshold(scale=0.5), waves, labels, **kw)  # needs twice the budget
    out = epsilon_ratio(defended, original)
    assert out["eps_r"] == pytest.approx(2.0, rel=0.03) and out["eps090_ratio"] == pytest.approx(2.0, rel=0.03)
    assert out["eps_r_partial"] == 0.0
    assert epsilon_ratio(defended.summary, dict(original.summary)) == out
    # eps* = 20·threshold: only the first example (eps* = 4) is broken within eps_max = 8
    never = evaluate_attack(line_victim(), Threshold(scale=0.05), waves, labels, **kw)
    from_mlflow = {**never.summary, "eps_090": 1.7976931348623157e308}  # MLflow's SQL store for inf
    partial = epsilon_ratio(from_mlflow, original)
    assert partial["eps_r_partial"] == 1.0 and partial["eps090_ratio"] == math.inf
    assert partial["eps_r"] == pytest.approx(4.0 / 1.0, rel=0.05)  # original: mean of 0.2 … 1.8
    with pytest.raises(ValueError, match="eps_090"):
        epsilon_ratio({"mean_eps_star_within_eps090": 1.0}, original)


class FGM(Attack):
    """L2 fast gradient method in the representation domain (one step of ε along ∇/‖∇‖₂)."""

    norm = "l2"
    fixed_budget = True

    def run(self, model, x, labels, targets, bounds, eps) -> RunOutput:  # type: ignore[no-untyped-def]
        x = x.clone().requires_grad_(True)
        (g,) = torch.autograd.grad(F.cross_entropy(model(x), labels, reduction="sum"), x)
        step = g / g.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, 1, 1, 1)
        return RunOutput(bounds.clip(x.detach() + eps * step), torch.ones(x.shape[0], dtype=torch.long))


def test_tiny_victim_eps_star_is_a_bracket_and_batching_does_not_matter() -> None:
    victim = trained_victim()
    waves, labels = tones(4, seed=7)
    kw = dict(eps_max=20.0, n_budgets=6, n_bisect=3, sweep_chunk=6)
    ev = evaluate_attack(victim, FGM(), waves, labels, batch_size=64, **kw)
    assert ev.summary["base_size"] >= 10 and ev.success.sum() >= 4
    again = evaluate_attack(victim, FGM(), waves, labels, batch_size=5, **kw)
    assert torch.equal(again.eps_star, ev.eps_star)
    broken = ev.base_index[ev.success]
    adv_at = {}
    for which in ("eps_star", "eps_lower"):
        eps = getattr(ev, which)[ev.success]
        out = [FGM()(victim, waves[i:i + 1], labels[i:i + 1], epsilons=[float(e)])
               for i, e in zip(broken.tolist(), eps.tolist())]
        adv_at[which] = torch.cat([o.success[0] for o in out])
    assert adv_at["eps_star"].all() and not adv_at["eps_lower"].any()
    assert (ev.adv_logits[ev.success].argmax(dim=1) != labels[broken]).all()
    assert math.isnan(ev.summary["snr_db"])  # representation domain


def test_registered_attacks_on_the_tiny_victim() -> None:
    """The harness on real attacks: FGSM (fixed budget) and DeepFool (minimum norm)."""
    from attacks.base import create_attack

    victim = trained_victim(steps=5)  # not yet saturated, so cross-entropy gradients are informative
    waves, labels = tones(3, seed=7)
    bounds = victim.bounds("representation")
    for name, kw in (("fgsm", {"norm": "l2"}), ("deepfool", {"steps": 30})):
        ev = evaluate_attack(victim, create_attack(name, **kw), waves, labels, eps_max=12.0, n_budgets=5,
                             n_bisect=2, name=name)
        ok = ev.success
        assert ok.sum() >= ev.summary["base_size"] / 2, name
        assert (ev.adv_logits[ok].argmax(dim=1) != labels[ev.base_index[ok]]).all()
        assert bounds.contains(ev.adversarial).all()
        assert (ev.norms[ok] <= ev.eps_star[ok] * (1 + 1e-5)).all()
        if name == "deepfool":
            assert torch.allclose(ev.norms[ok], ev.eps_star[ok]) and ev.attack_calls == 1


@pytest.mark.gpu
def test_cuda_evaluation_matches_cpu() -> None:
    waves = waves_with_thresholds(THRESHOLDS)
    kw = dict(eps_max=2.0, n_budgets=6, n_bisect=4, batch_size=2)
    cpu = evaluate_attack(line_victim(), Threshold(), waves, LABELS, **kw)
    gpu = evaluate_attack(line_victim().cuda(), Threshold(), waves.cuda(), LABELS.cuda(), **kw)
    assert torch.equal(cpu.eps_star, gpu.eps_star) and cpu.summary["fooling_auc"] == gpu.summary["fooling_auc"]


def test_auc_interval_can_be_shorter_than_the_search() -> None:
    """ε* searched up to 8, AUC and FR read on [0, 2] (seed 004: Table II under ‖ε‖₂ ≤ 3, ε_r unbounded)."""
    waves = waves_with_thresholds(THRESHOLDS)
    wide = evaluate_attack(line_victim(), Threshold(), waves, LABELS, eps_max=2.0, search_eps_max=8.0, n_budgets=8,
                           n_bisect=6)
    narrow = evaluate_attack(line_victim(), Threshold(), waves, LABELS, eps_max=2.0, n_budgets=6, n_bisect=6)
    assert wide.summary["eps_max"] == 2.0 and wide.summary["search_eps_max"] == 8.0
    assert wide.summary["fooling_auc"] == pytest.approx((1.7 + 1.4 + 0.8) / 8, abs=0.02)
    assert wide.summary["fr_at_eps_max"] == narrow.summary["fr_at_eps_max"] == 0.75
    assert wide.success.tolist() == [True] * 4 and narrow.success.tolist() == [True] * 3 + [False]
    assert wide.summary["eps_090"] == pytest.approx(5.0, rel=0.05) and narrow.summary["eps_090"] == math.inf


def test_eps_star_below_the_grid_is_resolved_not_floored(caplog: pytest.LogCaptureFixture) -> None:
    """Issue 7 item 2: the demo's grid (5 budgets up to 12, smallest 0.75) with one bisection capped ε* at
    0.375; the refinement halves below the grid until the attack fails, then brackets ε* to 5 %."""
    thresholds = [0.01, 0.1, 0.3, 2.0, 1e-9]
    ev = evaluate_attack(line_victim(), Threshold(), waves_with_thresholds(thresholds), torch.zeros(5, dtype=torch.long),
                         eps_max=3.0, search_eps_max=12.0, n_budgets=5, eps_floor=1e-4)
    thr = torch.tensor(thresholds[:4], dtype=torch.float64)
    assert ev.epsilons[0] == 0.75
    assert (ev.eps_star[:4] > thr).all() and (ev.eps_star[:4] <= thr * 1.05 + 1e-12).all()
    assert ev.eps_star[4] == 1e-4 and ev.on_floor.tolist() == [False] * 4 + [True]
    s = ev.summary
    assert s["eps_floor_share"] == pytest.approx(0.2) and s["eps_floor"] == 1e-4 and s["eps_star_resolution"] <= 0.05
    assert "search floor" in caplog.text  # 20 % > 10 % of the broken examples sit on the floor


def test_search_range_must_cover_eps_max() -> None:
    with pytest.raises(ValueError, match="search_eps_max 2 must be >= eps_max 3"):
        evaluate_attack(line_victim(), Threshold(), waves_with_thresholds(THRESHOLDS), LABELS, eps_max=3.0,
                        search_eps_max=2.0)


def test_summary_metrics_are_read_at_eps_max_not_at_the_search_range() -> None:
    """Issue 7 item 5: accuracy, SNR and confidences at the budget logged as eps_max."""
    waves = waves_with_thresholds(THRESHOLDS)
    ev = evaluate_attack(line_victim(), Threshold(), waves, LABELS, eps_max=1.0, search_eps_max=8.0, n_budgets=8)
    s = ev.summary
    assert s["eps_max"] == 1.0 and s["search_eps_max"] == 8.0
    assert s["adv_accuracy"] == pytest.approx(2 / 5)  # 1.2 and 5.0 survive eps_max = 1 (the 5th is misclassified)
    assert s["adv_accuracy_at_search_eps_max"] == 0.0
    snr = 20 * torch.log10(torch.tensor(THRESHOLDS[:2], dtype=torch.float64) / ev.eps_star[:2])
    assert s["snr_db"] == pytest.approx(float(snr.mean()), abs=1e-4)  # the two broken within eps_max only
    assert s["median_iterations"] == float(M.median(ev.iterations[:2]))
    assert ev.confusion(True).tolist() == [[2, 3], [0, 0]]  # 2 broken within 1, the unbroken two keep class 0


def test_record_round_trip_keeps_what_resume_needs() -> None:
    """Issue 8 item 4: per-example ε*, bounds, norms and targets survive a JSON round trip."""
    import json

    from evaluation.harness import from_record, to_record

    ev = evaluate_attack(line_victim(), Threshold(), waves_with_thresholds(THRESHOLDS), LABELS, eps_max=1.0,
                         search_eps_max=2.0, n_budgets=4)
    back = from_record(json.loads(json.dumps(to_record(ev))))
    for name in ("eps_star", "eps_lower", "base", "labels", "clean_pred", "epsilons", "norms", "sweep_success"):
        assert torch.equal(getattr(back, name), getattr(ev, name)), name
    assert back.summary == ev.summary and back.eps_max == 1.0 and back.search_eps_max == 2.0
    assert torch.allclose(back.eps_clip(), ev.eps_clip(), equal_nan=True)
    assert back.adversarial is None


def test_per_example_refinement_matches_grouped_calls_with_fewer_calls() -> None:
    from attacks.gradient import FGSM

    class GroupedFGSM(FGSM):
        per_example_budgets = False

    victim = trained_victim()
    waves, labels = tones(4, seed=7)
    kw = dict(eps_max=3.0, search_eps_max=20.0, n_budgets=5, name="fgsm")
    fast = evaluate_attack(victim, FGSM(norm="l2"), waves, labels, **kw)
    slow = evaluate_attack(victim, GroupedFGSM(norm="l2"), waves, labels, **kw)
    assert torch.equal(fast.eps_star, slow.eps_star) and torch.equal(fast.eps_lower, slow.eps_lower)
    assert fast.attack_calls < slow.attack_calls and fast.summary["eps_star_resolution"] <= 0.05


def test_evaluate_takes_the_experiment_settings_whole_and_the_budgets_of_the_attacks_norm() -> None:
    from evaluation.config import EvalConfig
    from evaluation.harness import evaluate
    from victims.registry import ConfigError

    waves = waves_with_thresholds([0.5, 1.5, 3.0, 7.0])
    labels = torch.zeros(4, dtype=torch.long)
    cfg = EvalConfig(eps_max={"waveform": {"l2": 2.0}, "representation": {"l2": 99.0}},
                     search_eps_max={"waveform": {"l2": 8.0}}, n_budgets=4, eps_rtol=0.01, batch_size=4, seed=3)
    ev = evaluate(line_victim(), Threshold(), waves, labels, cfg, name="thr")
    direct = evaluate_attack(line_victim(), Threshold(), waves, labels, eps_max=2.0, search_eps_max=8.0, n_budgets=4,
                             rtol=0.01, batch_size=4, seed=3, name="thr", quality=True)
    assert ev.summary["eps_max"] == 2.0 and ev.summary == direct.summary
    assert torch.equal(ev.eps_star, direct.eps_star)
    with pytest.raises(ConfigError, match="no evaluation.eps_max.waveform.l2 \\(attack 'thr'\\)"):
        evaluate(line_victim(), Threshold(), waves, labels, EvalConfig(eps_max={"waveform": {"linf": 1.0}}), name="thr")


@pytest.mark.timeout(180)
def test_nes_search_matches_sweep_and_bisection_in_one_call_with_exact_query_counts() -> None:
    """NES's one-run ε search (``search``) against the fixed-budget sweep + bisection, on the line victim
    whose minimal L2 perturbation is each clip's threshold: every ε* is at least the threshold (nothing
    smaller succeeds), the search's is within the sweep's 5 % resolution of the sweep's or below it, in one
    attack call and fewer queries; its stored examples succeed at norm ε*, and ``total_queries`` counts
    every row the victim evaluated (plus the harness's clean prediction and each call's check)."""
    from attacks import create_attack

    thresholds = [0.1, 0.2, 0.4, 0.8]
    waves, labels = waves_with_thresholds(thresholds), torch.zeros(4, dtype=torch.long)
    common = {"domain": "waveform", "norm": "l2", "sigma": 1e-3, "n_samples": 8, "max_queries": 10_000}
    fixed = create_attack("nes", learning_rate=0.05, max_iterations=60, **common)
    search = create_attack("nes", search=True, eps_start=0.02, momentum=0.99, patience=20, max_iterations=600,
                           **common)
    old = evaluate_attack(line_victim(), fixed, waves, labels, eps_max=1.0, search_eps_max=2.0, n_budgets=5, rtol=0.05,
                          seed=0)
    victim, counter = line_victim(), CountRows()
    victim.backbone = nn.Sequential(counter, victim.backbone)
    new = evaluate_attack(victim, search, waves, labels, eps_max=1.0, search_eps_max=2.0, n_budgets=5, rtol=0.05,
                          seed=0)
    assert counter.rows == int(new.total_queries.sum()) + 4 + 4  # + the clean predictions and the success check
    thr = torch.tensor(thresholds, dtype=torch.float64)
    assert old.success.all() and new.success.all()
    assert (old.eps_star >= thr * (1 - 1e-5)).all() and (new.eps_star >= thr * (1 - 1e-5)).all()
    assert (new.eps_star <= old.eps_star * 1.05).all(), new.eps_star / old.eps_star
    assert new.attack_calls == 1 and int(new.total_queries.sum()) < int(old.total_queries.sum())
    assert torch.equal(new.total_queries, new.queries)
    logits = line_victim().logits_fn("waveform")(new.adversarial)
    assert (logits.argmax(dim=1) != 0).all()
    assert torch.allclose(new.norms, new.eps_star)
