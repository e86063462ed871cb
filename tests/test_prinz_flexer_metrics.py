"""Prinz & Flexer's study metrics on hand-computed cases: target pairs, the pair matrix, matched-SNR noise,
the clip bootstrap, and a row's summary (Tables 1-2)."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from evaluation.metrics import snr_db
from experiments.prinz_flexer.metrics import (bootstrap_interval, cluster_draws, matched_noise, mean_or_nan,
                                              noise_at_snr, pair_matrix, random_target_attempts, target_pairs)
from evaluation.stats import wilson_interval
from experiments.prinz_flexer.config import EvalOptions
from experiments.prinz_flexer.report import final_predictions, summarize


def test_target_pairs_leave_out_the_true_class_and_the_clean_prediction() -> None:
    clip, target = target_pairs(torch.tensor([0, 1]), torch.tensor([0, 2]), 3)
    assert clip.tolist() == [0, 0, 1] and target.tolist() == [1, 2, 0]


def test_random_target_attempts_avoid_the_true_class_and_the_clean_prediction_and_reach_every_other_class() -> None:
    labels = torch.tensor([0, 1, 2, 3] * 100)
    pred = torch.tensor([0, 1, 2, 0] * 100)  # the clips of class 3 are misclassified as 0
    clip, targets = random_target_attempts(labels, pred, 4, seed=21)
    assert torch.equal(clip, torch.arange(400))
    assert not bool((targets == pred).any() or (targets == labels).any())
    assert set(targets[labels == 0].tolist()) == {1, 2, 3} and set(targets[labels == 3].tolist()) == {1, 2}
    assert torch.equal(targets, random_target_attempts(labels, pred, 4, seed=21)[1])


def test_random_target_attempts_skip_a_clip_with_no_class_left() -> None:
    clip, targets = random_target_attempts(torch.tensor([0, 1]), torch.tensor([1, 1]), 2, seed=0)
    assert clip.tolist() == [1] and targets.tolist() == [0]


def test_pair_matrix_counts_and_mean_snr_by_hand() -> None:
    mat = pair_matrix(sources=np.array([0, 0, 1, 1, 1, 1]), targets=np.array([1, 2, 0, 2, 2, 2]),
                      success=np.array([True, False, True, True, True, False]),
                      snr=np.array([30.0, 99.0, 40.0, 20.0, 10.0, 77.0]), num_classes=3)
    assert mat.attempts.tolist() == [[0, 1, 1], [1, 0, 3], [0, 0, 0]]
    assert mat.found.tolist() == [[0, 1, 0], [1, 0, 2], [0, 0, 0]]
    np.testing.assert_allclose(mat.mean_snr, [[np.nan, 30, np.nan], [40, np.nan, 15], [np.nan] * 3])
    np.testing.assert_allclose(mat.rate, [[np.nan, 1, 0], [1, np.nan, 2 / 3], [np.nan] * 3])


def test_pair_matrix_leaves_non_finite_snr_out_of_the_mean_but_counts_the_example() -> None:
    mat = pair_matrix(np.array([0, 0]), np.array([1, 1]), np.array([True, True]), np.array([math.inf, 12.0]), 2)
    assert mat.found[0, 1] == 2 and mat.mean_snr[0, 1] == 12.0
    with pytest.raises(ValueError, match=r"\[0, 2\)"):
        pair_matrix(np.array([0]), np.array([2]), np.array([True]), np.array([1.0]), 2)


def test_matched_noise_has_the_perturbations_energy_inside_the_snr_window() -> None:
    clean = torch.tensor([[[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]]], dtype=torch.float64)
    delta = torch.tensor([[[100.0, 0.0, 3.0, 4.0, 0.0, -50.0]]], dtype=torch.float64)  # window norm 5
    noise = matched_noise(clean, clean + delta, trim=1, generator=torch.Generator().manual_seed(0))
    assert float(noise[0, 0, 1:5].norm()) == pytest.approx(5.0, rel=1e-12)
    expected = 20 * math.log10(math.sqrt(4 + 9 + 16 + 25) / 5)  # ‖[2, 3, 4, 5]‖ / 5
    assert float(snr_db(clean, clean + noise, trim=1)[0]) == pytest.approx(expected, rel=1e-12)
    assert float(snr_db(clean, clean + delta, trim=1)[0]) == pytest.approx(expected, rel=1e-12)


def test_matched_noise_is_zero_for_a_zero_perturbation() -> None:
    clean = torch.randn(2, 1, 50)
    assert torch.equal(matched_noise(clean, clean.clone(), trim=5), torch.zeros_like(clean))


def test_noise_at_snr_by_hand_and_silent_windows_get_none() -> None:
    clean = torch.tensor([[[0.0, 3.0, 4.0, 0.0]], [[7.0, 0.0, 0.0, 7.0]]], dtype=torch.float64)
    noise = noise_at_snr(clean, 20.0, trim=1, generator=torch.Generator().manual_seed(1))
    assert float(noise[0, 0, 1:3].norm()) == pytest.approx(0.5, rel=1e-12)  # ‖[3, 4]‖ · 10^(−20/20)
    assert torch.equal(noise[1], torch.zeros_like(noise[1]))  # nothing to measure an SNR against
    with pytest.raises(ValueError, match="finite"):
        noise_at_snr(clean, math.inf, trim=1)


def test_cluster_draws_move_the_attempts_of_one_clip_together() -> None:
    weights = cluster_draws(np.array([0, 0, 1]), n_clips=2, n_boot=200, seed=3)
    assert weights.shape == (200, 3)
    assert np.array_equal(weights[:, 0], weights[:, 1])
    assert np.all(weights[:, 0] + weights[:, 2] == 2)  # each draw holds two clips
    assert {0, 1, 2} <= set(weights[:, 2].tolist())


def test_bootstrap_interval_of_a_constant_and_of_nothing() -> None:
    weights = cluster_draws(np.arange(4), 4, 100, 0)
    flat = bootstrap_interval(np.full(4, 2.5), weights, mean_or_nan, 2.5)
    assert (flat.low, flat.high) == (2.5, 2.5)
    empty = bootstrap_interval(np.zeros(0), weights[:, :0], mean_or_nan, math.nan)
    assert math.isnan(empty.low) and empty.undefined_share == 1.0


def _record() -> dict:
    """Four clips of classes [0, 1, 1, 2]; clip 2 is misclassified; untargeted, one attempt per clip."""
    return {"row": "r", "mode": "untargeted", "class_names": ["a", "b", "c"], "labels": [0, 1, 1, 2],
            "clean_pred": [0, 1, 0, 2], "clip": [0, 1, 2, 3], "target": [-1] * 4,
            "success": [True, True, False, True], "adv_pred": [2, 0, 0, 1], "adv_conf": [0.6, 0.8, 0.9, 0.4],
            "snr_db": [30.0, 40.0, 5.0, 50.0], "iterations": [3, 10, 100, 20],
            "noise_pred": [0, 2, 0, 2], "noise_snr_db": [30.0, 40.0, 5.0, 50.0],
            "noise_mean_snr_db": 40.0, "noise_mean_pred": [0, 1, 1, 0]}


def test_final_predictions_take_the_adversarial_one_only_where_found() -> None:
    assert final_predictions(_record()) == [2, 0, 0, 1]
    assert final_predictions({**_record(), "success": [False] * 4}) == [0, 1, 0, 2]


def test_summary_of_a_row_by_hand() -> None:
    s = summarize(_record(), EvalOptions(n_boot=200))
    assert (s["attempts"], s["found"], s["clips"]) == (4, 3, 4)
    assert s["found_quiet"] == 3 and s["found_quiet_rate"] == 0.75  # SNR 30, 40, 50 dB; clip 2 failed at 5 dB
    s20 = summarize({**_record(), "snr_db": [29.9, 40.0, 5.0, 50.0]}, EvalOptions(n_boot=50))
    assert s20["found_quiet"] == 2 and s20["found_quiet_rate"] == 0.5
    assert s["found_rate"] == 0.75 and s["accuracy"] == 0.0 and s["clean_accuracy"] == 0.75
    assert s["snr_mean"] == pytest.approx(40.0) and s["snr_median"] == 40.0  # over the found: 30, 40, 50
    assert s["iterations_median"] == 10.0 and s["confidence"] == pytest.approx(0.6)
    # matched noise: found clips 0, 1, 3 predicted 0, 2, 2 under noise (truth 0, 1, 2); clip 2 keeps its clean 0
    assert s["noise_accuracy"] == 0.5 and s["noise_changed_rate"] == pytest.approx(1 / 3)
    assert s["noise_mean_snr_db"] == 40.0 and s["noise_mean_accuracy"] == 0.75
    assert s["noise_snr_gap_max"] == 0.0
    low, high = s["found_rate_ci_low"], s["found_rate_ci_high"]  # Wilson: one attempt per clip
    assert 0 < low < 0.75 < high < 1
    assert s["snr_mean_ci_low"] <= 40.0 <= s["snr_mean_ci_high"]


def test_summary_of_a_clean_row() -> None:
    record = {"row": "clean", "mode": "clean", "labels": [0, 1, 1, 2], "clean_pred": [0, 1, 0, 2],
              "clean_conf": [0.9, 0.7, 0.5, 0.9]}
    s = summarize(record, EvalOptions(n_boot=100))
    assert s["clean_accuracy"] == 0.75 and s["confidence"] == pytest.approx(0.75)


def test_a_clustered_rate_of_zero_gets_a_wilson_interval_over_its_distinct_clips() -> None:
    record = {**_record(), "clip": [0, 0, 1, 1], "success": [True, True, True, True], "target": [1, 2, 0, 2],
              "noise_pred": [0, 0, 1, 1]}  # two clips, two targets each; the noise changes no prediction
    s = summarize(record, EvalOptions(n_boot=100))
    assert s["noise_changed_rate"] == 0.0 and s["noise_changed_rate_ci_low"] == 0.0
    assert s["noise_changed_rate_ci_high"] == pytest.approx(wilson_interval(0.0, 2)[1])
    assert s["found_rate_ci_high"] == 1.0 and s["found_rate_ci_low"] == pytest.approx(wilson_interval(1.0, 2)[0])
