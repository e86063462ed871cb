"""Transfer rates with base-set masking (seed 001, Table 5) and the clip bootstrap of ratios of sums."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from evaluation import metrics as M
from evaluation import stats
from evaluation.transfer import TransferRecord, check_class_sets, replay, transfer_rates
from victims.registry import ConfigError

# fooled[a, b, i]: the example crafted on model a for clip i fools model b (3 models, 5 clips)
FOOLED = torch.tensor([[[1, 1, 1, 0, 1], [1, 0, 1, 0, 1], [0, 0, 1, 1, 0]],
                       [[1, 0, 0, 0, 0], [1, 1, 1, 1, 0], [1, 1, 0, 0, 0]],
                       [[0, 0, 0, 0, 0], [0, 0, 0, 0, 0], [1, 0, 0, 1, 1]]], dtype=torch.bool)
# clean_correct[b, i]: model b classifies clip i correctly (its base set)
CORRECT = torch.tensor([[1, 1, 1, 1, 0],
                        [1, 1, 0, 1, 1],
                        [1, 0, 1, 1, 1]], dtype=torch.bool)


def test_transfer_matrix_masks_both_base_sets_hand_computed() -> None:
    t = M.transfer_matrix(FOOLED, CORRECT)
    # crafted on 0: fools 0 on clips 0,1,2,4, but clip 4 is outside 0's base set -> {0,1,2}.
    #   tested on 1: eligible = {0,1} (1 misclassifies clip 2 on clean input), fooled on {0} -> 1/2
    #   tested on 2: eligible = {0,2} (2 misclassifies clip 1), fooled on {2} -> 1/2
    # crafted on 1: fools 1 on 0,1,2,3; in 1's base set {0,1,3}.
    #   tested on 0: eligible {0,1,3}, fooled {0} -> 1/3;  tested on 2: eligible {0,3}, fooled {0} -> 1/2
    # crafted on 2: fools 2 on 0,3,4 (all in its base set).
    #   tested on 0: eligible {0,3} (clip 4 misclassified by 0), fooled none -> 0
    #   tested on 1: eligible {0,3,4}, fooled none -> 0
    expected = [[1.0, 0.5, 0.5], [1 / 3, 1.0, 0.5], [0.0, 0.0, 1.0]]
    torch.testing.assert_close(t, torch.tensor(expected, dtype=torch.float64))
    eligible, hit = M.transfer_masks(FOOLED, CORRECT)
    assert eligible[0, 1].tolist() == [True, True, False, False, False]
    assert hit[1, 0].tolist() == [True, False, False, False, False]
    assert not (hit & ~eligible).any()


def test_transfer_matrix_empty_base_sets_and_bad_shapes() -> None:
    nothing = M.transfer_matrix(FOOLED, torch.zeros(3, 5, dtype=torch.bool))
    assert torch.isnan(nothing).all()
    with pytest.raises(ValueError, match=r"\(M, M, N\)"):
        M.transfer_matrix(torch.zeros(2, 3, 3, dtype=torch.bool))
    with pytest.raises(ValueError, match=r"clean_correct must be shaped \(3, 5\)"):
        M.transfer_matrix(FOOLED, CORRECT[:2])


def test_ratio_of_sums_draws_hand_computed() -> None:
    num, den = np.array([2.0, 0.0, 1.0]), np.array([2.0, 1.0, 0.0])
    idx = np.array([[0, 1, 2], [1, 1, 2], [2, 2, 2], [0, 0, 1]])
    draws = stats.ratio_of_sums_draws(num, den, idx)
    # (2+0+1)/(2+1+0) = 1;  (0+0+1)/(1+1+0) = 0.5;  3/0 undefined;  (2+2+0)/(2+2+1) = 0.8
    assert draws[[0, 1, 3]].tolist() == pytest.approx([1.0, 0.5, 0.8]) and math.isnan(draws[2])


def test_ratio_of_sums_interval_point_bounds_and_degenerate_cases() -> None:
    found = stats.ratio_of_sums_interval([1, 0, 1, 1], [1, 1, 1, 1], n_boot=500)
    assert found.value == 0.75 and 0.0 <= found.low <= 0.75 <= found.high <= 1.0 and found.low < found.high
    same = stats.ratio_of_sums_interval([3.0, 6.0, 9.0], [1, 2, 3], n_boot=200)  # every clip's mean is 3
    assert (same.value, same.low, same.high) == (3.0, 3.0, 3.0)
    one = stats.ratio_of_sums_interval([2.0, 0.0], [1, 0])  # a single clip carries the mean: no interval
    assert one.value == 2.0 and math.isnan(one.low) and math.isnan(one.high)
    empty = stats.ratio_of_sums_interval([], [])
    assert math.isnan(empty.value) and math.isnan(empty.low)


def test_transfer_rates_pool_attacks_per_clip_in_table_5_layout() -> None:
    labels = torch.arange(5)
    first = TransferRecord("deepfool", ["a", "b", "c"], labels, CORRECT, FOOLED)
    second = TransferRecord("cw", ["a", "b", "c"], labels, CORRECT, FOOLED.clone().fill_(False))
    rates = transfer_rates([first, second], n_boot=200)
    # rows = tested on, columns = crafted on; the C&W record adds nothing that fools its source
    assert rates["value"].at["b", "a"] == pytest.approx(0.5) and rates["value"].at["a", "b"] == pytest.approx(1 / 3)
    assert rates["n"].at["b", "c"] == 3 and math.isnan(rates["value"].at["a", "a"])
    both = transfer_rates([first, first], n_boot=200)  # the same examples twice: same rates, clips move together
    assert both["value"].equals(transfer_rates([first], n_boot=200)["value"])
    assert both["n"].at["b", "c"] == 6
    with pytest.raises(ConfigError, match="cover different models or clips"):
        transfer_rates([first, TransferRecord("cw", ["a", "c", "b"], labels, CORRECT, FOOLED)])
    back = TransferRecord.from_dict(first.to_dict())
    assert torch.equal(back.fooled, FOOLED) and back.models == ["a", "b", "c"]


def test_models_of_different_class_sets_are_a_one_line_config_error() -> None:
    check_class_sets({"a": ["x", "y"], "b": ["x", "y"]})
    with pytest.raises(ConfigError, match=r"^transfer between models of different class sets: 'a' has 2 classes "
                                          r"\(x, y\), 'b' has 3 \(x, y, z\)$"):
        check_class_sets({"a": ["x", "y"], "b": ["x", "y", "z"]})


def test_replay_runs_each_models_examples_on_every_model() -> None:
    from tests.tiny import CLASS_NAMES, Victim, tones, trained_victim

    first, second = trained_victim(0), trained_victim(1)
    waves, labels = tones(2, seed=5)
    adversarial = waves.flip(0)  # clips of other classes: the "adversarial" inputs fool whoever is right
    crafted = {"first": (torch.tensor([0, 1]), adversarial[:2]), "second": (torch.tensor([4]), adversarial[4:5])}
    record = replay("swap", {"first": first, "second": second}, waves, labels, crafted)
    with torch.no_grad():
        pred = {n: v(waves).argmax(1) for n, v in (("first", first), ("second", second))}
        on_adv = {n: v(adversarial).argmax(1) for n, v in (("first", first), ("second", second))}
    assert record.correct.tolist() == [(pred["first"] == labels).tolist(), (pred["second"] == labels).tolist()]
    assert record.fooled[0, 1].tolist() == [bool(on_adv["second"][i] != labels[i]) if i < 2 else False
                                            for i in range(6)]
    assert record.fooled[1, 0, 4] == bool(on_adv["first"][4] != labels[4]) and not record.fooled[1, :, :4].any()
    odd = Victim(first.frontend, first.backbone, ["p", "q", "r"], first.num_samples)
    assert CLASS_NAMES != ["p", "q", "r"]
    with pytest.raises(ConfigError, match="different class sets"):
        replay("swap", {"first": first, "odd": odd}, waves, labels, crafted)
