"""Subramanian et al.'s measures on hand-computed cases: fixed-SNR budgets, per-attempt records, grouped means."""
from __future__ import annotations

import math

import pandas as pd
import pytest
import torch

from evaluation import metrics as M
from experiments.subramanian.metrics import attempt_record, grouped_ratio, snr_budgets


def test_snr_budgets_hand_computed_and_reach_the_snr() -> None:
    waves = torch.tensor([[[0.5, -0.5, 0.5, -0.5]], [[0.2, 0.0, 0.0, 0.0]]])
    # ||x||_2 = 1 and 0.2; at 20 dB the L2 budget is a tenth of it
    assert snr_budgets(waves, 20.0, "l2").tolist() == pytest.approx([0.1, 0.02])
    # RMS = 0.5 and 0.1: a sign step of RMS/10 has ||delta||_2 = eps * sqrt(4) = ||x||_2 / 10
    linf = snr_budgets(waves, 20.0, "linf")
    assert linf.tolist() == pytest.approx([0.05, 0.01])
    delta = linf.view(-1, 1, 1) * torch.tensor([1.0, -1.0, 1.0, 1.0])
    assert M.snr_db(waves, waves + delta).tolist() == pytest.approx([20.0, 20.0])
    with pytest.raises(ValueError, match="no fixed-SNR budget for norm 'l0'"):
        snr_budgets(waves, 20.0, "l0")


def test_attempt_record_hand_computed() -> None:
    labels = torch.tensor([0, 1])
    clean = torch.tensor([[math.log(3.0), 0.0, 0.0], [0.0, math.log(2.0), 0.0]])  # p_true 0.6 and 0.5
    adv = torch.tensor([[0.0, math.log(4.0), math.log(3.0)], [0.0, math.log(2.0), 0.0]])
    x = torch.ones(2, 1, 4) * 0.5
    rec = attempt_record(labels, clean, adv, x, x + torch.tensor([0.1, 0.0, 0.0, 0.0]))
    assert rec["success"] == [True, False] and rec["adv_pred"] == [1, 1]
    assert rec["conf_true_clean"] == pytest.approx([0.6, 0.5])
    assert rec["conf_adv_label"] == pytest.approx([0.5, 0.5]) and rec["conf_true_adv"] == pytest.approx([0.125, 0.5])
    assert rec["snr_db"] == pytest.approx([20.0, 20.0])  # ||x||_2 = 1, ||delta||_2 = 0.1
    targeted = attempt_record(labels, clean, adv, x, x, targets=torch.tensor([2, 0]))
    assert targeted["success"] == [False, False] and targeted["snr_db"] == [math.inf, math.inf]


def test_grouped_ratio_means_over_selected_attempts_with_clips_as_units() -> None:
    frame = pd.DataFrame({"model": ["a", "a", "a", "b", "b", "b"], "clip": [0, 1, 2, 0, 1, 2],
                          "success": [True, False, True, True, True, False],
                          "snr_db": [40.0, 10.0, 50.0, 30.0, math.inf, 5.0]})
    per_model = grouped_ratio(frame, ["model"], "success", n_boot=200).set_index("model")
    assert per_model.loc["a", "value"] == pytest.approx(2 / 3) and per_model.loc["a", "n"] == 3
    snr = grouped_ratio(frame, ["model"], "snr_db", "success", n_boot=200).set_index("model")
    # a: mean of 40 and 50; b: 30 only (the inf SNR is left out), a single clip -> no interval
    assert snr.loc["a", "value"] == 45.0 and snr.loc["a", "low"] <= 45.0 <= snr.loc["a", "high"]
    assert snr.loc["b", "value"] == 30.0 and snr.loc["b", "n"] == 1 and math.isnan(snr.loc["b", "low"])
    pooled = grouped_ratio(frame.assign(all="x"), ["all"], "snr_db", "success", n_boot=200)
    assert pooled["value"].iloc[0] == pytest.approx(40.0) and pooled["n"].iloc[0] == 3
