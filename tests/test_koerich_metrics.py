"""experiments/koerich/metrics.py: majority vote and sum rule over segments (Koerich et al.), on hand-computed cases."""
from __future__ import annotations

import math

import numpy as np
import pytest

from experiments.koerich import metrics as A

# Three recordings (ids 5, 2, 9), six segments. Sorted ids: [2, 5, 9].
GROUPS = np.array([5, 5, 5, 2, 2, 9])
LABELS = np.array([1, 1, 1, 0, 0, 2])
PROBS = np.array([
    [0.00, 0.55, 0.45],  # rec 5: votes class 1 twice and class 2 once -> vote 1 (right);
    [0.00, 0.55, 0.45],  #        sums [0, 1.1, 1.9] -> sum rule 2 (wrong)
    [0.00, 0.00, 1.00],
    [0.60, 0.40, 0.00],  # rec 2: one vote each for 0 and 1 -> tie; sums [0.8, 1.1, 0.1] -> both say 1 (wrong)
    [0.20, 0.70, 0.10],
    [0.20, 0.30, 0.50],  # rec 9: one segment, class 2 (right)
])


def test_recordings_group_segments() -> None:
    rec = A.recordings(GROUPS, LABELS)
    assert rec.ids.tolist() == [2, 5, 9]
    assert rec.index.tolist() == [1, 1, 1, 0, 0, 2]
    assert rec.labels.tolist() == [0, 1, 2]
    assert rec.segments.tolist() == [2, 3, 1]


def test_vote_and_sum_disagree_where_computed_by_hand() -> None:
    rec = A.recordings(GROUPS, LABELS)
    assert A.majority_vote(PROBS, rec).tolist() == [1, 1, 2]
    assert A.sum_rule(PROBS, rec).tolist() == [1, 2, 2]


def test_accuracy_counts() -> None:
    counts = A.accuracy_counts(PROBS, A.recordings(GROUPS, LABELS))
    assert counts["segment"].tolist() == [1, 2, 1]  # rec 2: segment 3 right, 4 wrong; rec 5: 2 of 3
    assert counts["vote"].tolist() == [0, 1, 1]
    assert counts["sum"].tolist() == [0, 0, 1]
    rec = A.recordings(GROUPS, LABELS)
    assert A.ratio_of_sums(counts["segment"], rec.segments) == pytest.approx(4 / 6)
    assert A.ratio_of_sums(counts["vote"], np.ones(3)) == pytest.approx(2 / 3)


def test_vote_tie_with_equal_sums_goes_to_lower_class() -> None:
    rec = A.recordings(np.array([0, 0]), np.array([0, 0]))
    probs = np.array([[0.1, 0.5, 0.4], [0.1, 0.4, 0.5]])  # one vote each for 1 and 2, sums 0.9 and 0.9
    assert A.majority_vote(probs, rec).tolist() == [1]


def test_tie_break_ignores_untied_classes() -> None:
    # votes: class 0 twice, class 1 twice, class 2 once; sums 1.35, 1.45 and 2.2: the vote tie goes to 1
    # (larger sum of the tied classes), although class 2 has the largest sum (which the sum rule picks)
    rec = A.recordings(np.zeros(5, np.int64), np.zeros(5, np.int64))
    probs = np.array([[0.4, 0.3, 0.3], [0.4, 0.3, 0.3], [0.3, 0.4, 0.3], [0.25, 0.45, 0.3], [0.0, 0.0, 1.0]])
    assert A.majority_vote(probs, rec).tolist() == [1]
    assert A.sum_rule(probs, rec).tolist() == [2]


def test_conflicting_labels_in_one_recording_raise() -> None:
    with pytest.raises(ValueError, match="recording 3"):
        A.recordings(np.array([3, 3]), np.array([0, 1]))


def test_probs_must_match_segments() -> None:
    with pytest.raises(ValueError, match="segments=6"):
        A.sum_rule(PROBS[:4], A.recordings(GROUPS, LABELS))


def test_transfer_counts() -> None:
    rec = A.recordings(GROUPS, LABELS)
    source_fooled = np.array([1, 1, 0, 1, 1, 1], bool)
    target_clean_right = np.array([1, 0, 1, 1, 1, 1], bool)
    target_fooled = np.array([1, 1, 1, 0, 1, 0], bool)
    num, den = A.transfer_counts(source_fooled, target_clean_right, target_fooled, rec)
    # base segments: 0 (rec 5), 3 and 4 (rec 2), 5 (rec 9); of those fooled on the target: 0 and 4
    assert den.tolist() == [2, 1, 1]
    assert num.tolist() == [1, 1, 0]
    assert A.ratio_of_sums(num, den) == pytest.approx(0.5)


def test_ratio_of_sums_weights_by_denominator() -> None:
    assert A.ratio_of_sums(np.array([3.0, 1.0]), np.array([4.0, 1.0])) == pytest.approx(0.8)
    assert math.isnan(A.ratio_of_sums(np.zeros(2), np.zeros(2)))


def test_cluster_interval_hand_cases() -> None:
    constant = A.cluster_interval(np.array([2.0, 1.0, 3.0]), np.array([2.0, 1.0, 3.0]), n_boot=200)
    assert (constant.value, constant.low, constant.high) == (1.0, 1.0, 1.0)
    # two recordings, one right and one wrong: a draw is 0, 1/2 or 1 (each extreme with probability 1/4)
    half = A.cluster_interval(np.array([1.0, 0.0]), np.array([1.0, 1.0]), n_boot=1000, seed=3)
    assert (half.value, half.low, half.high) == (0.5, 0.0, 1.0)


def test_cluster_interval_counts_empty_draws() -> None:
    got = A.cluster_interval(np.array([1.0, 0.0]), np.array([1.0, 0.0]), n_boot=1000, seed=1)
    assert got.value == 1.0
    assert 0.15 < got.undefined_share < 0.35  # draws of only the second recording: probability 1/4
    assert math.isnan(got.low)  # more than 5 % of draws undefined: the bounds are undetermined

