"""Every metric of evaluation/metrics.py on hand-computed cases (and sklearn/numpy oracles)."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from sklearn.metrics import confusion_matrix as sk_confusion

from evaluation import metrics as M

INF = math.inf


def test_fooling_rate_is_the_empirical_cdf() -> None:
    eps_star = torch.tensor([0.5, 1.0, 2.0, INF], dtype=torch.float64)
    assert float(M.fooling_rate(eps_star, 1.0)) == 0.5
    assert M.fooling_rate(eps_star, torch.tensor([0.0, 0.5, 2.5, 1e9])).tolist() == [0.0, 0.25, 0.75, 0.75]
    assert math.isnan(float(M.fooling_rate(torch.zeros(0), 1.0)))


def test_fooling_auc_hand_computed_and_numerical_integral() -> None:
    eps_star = torch.tensor([0.5, 1.0, 2.0, INF], dtype=torch.float64)
    # (1.5/2 + 1/2 + 0 + 0) / 4
    assert M.fooling_auc(eps_star, 2.0) == pytest.approx(0.3125, abs=1e-12)
    grid = np.linspace(0.0, 2.0, 200001)
    fr = M.fooling_rate(eps_star, torch.from_numpy(grid)).numpy()
    assert M.fooling_auc(eps_star, 2.0) == pytest.approx(np.trapezoid(fr, grid) / 2.0, abs=1e-4)
    assert M.fooling_auc(torch.zeros(3, dtype=torch.float64), 3.0) == 1.0
    assert M.fooling_auc(torch.full((3,), INF), 3.0) == 0.0
    with pytest.raises(ValueError, match="eps_max"):
        M.fooling_auc(eps_star, 0.0)


def test_eps_at_rate_ties_infinity_and_rounding() -> None:
    ten = torch.tensor([1, 2, 3, 4, 5, 6, 7, 8, 9, INF], dtype=torch.float64)
    assert M.eps_at_rate(ten, 0.9) == 9.0  # 0.9·10 must not round up to 10
    assert M.eps_at_rate(torch.tensor([1.0, 1.0, 1.0, 2.0]), 0.5) == 1.0
    assert M.eps_at_rate(torch.tensor([3.0, 1.0, 1.0, 2.0]), 0.9) == 3.0
    assert M.eps_at_rate(torch.tensor([1.0, 2.0, INF, INF]), 0.9) == INF
    assert math.isnan(M.eps_at_rate(torch.zeros(0), 0.9))


def test_mean_eps_within() -> None:
    eps_star = torch.tensor([1.0, 2.0, 3.0, INF], dtype=torch.float64)
    assert M.mean_eps_within(eps_star, 2.0) == 1.5
    assert M.mean_eps_within(eps_star, INF) == 2.0
    assert math.isnan(M.mean_eps_within(eps_star, 0.5))


def test_epsilon_ratio_hand_computed() -> None:
    original = torch.arange(1, 11, dtype=torch.float64)  # eps_090 = 9, mean of 1..9 = 5
    out = M.epsilon_ratio(2 * original, original)
    assert out == {"eps_r": 2.0, "eps090_ratio": 2.0, "eps_r_partial": 0.0}
    defended = torch.tensor([1.0, 2.0, 3.0, INF], dtype=torch.float64)  # never reaches 0.9
    out = M.epsilon_ratio(defended, original)
    assert out["eps_r"] == pytest.approx(2.0 / 5.0) and out["eps090_ratio"] == INF and out["eps_r_partial"] == 1.0
    both = M.epsilon_ratio(defended, defended)
    assert math.isnan(both["eps090_ratio"]) and both["eps_r"] == 1.0
    assert math.isnan(M.epsilon_ratio(torch.full((2,), INF), original)["eps_r"])


def test_snr_known_delta_trim_and_seed001_form() -> None:
    x = torch.full((1, 1, 100), 0.5, dtype=torch.float64)
    assert float(M.snr_db(x, x + 0.05)[0]) == pytest.approx(20.0)
    spiky = x.clone()
    spiky[..., :5] += 0.5  # the perturbation sits only in the trimmed ends
    assert float(M.snr_db(x, spiky, trim=5)[0]) == INF
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(3, 1, 64, generator=gen, dtype=torch.float64)
    d = 0.1 * torch.randn(3, 1, 64, generator=gen, dtype=torch.float64)
    seed001 = 10 * torch.log10(a.pow(2).mean(dim=(1, 2)) / d.pow(2).mean(dim=(1, 2)))
    assert torch.allclose(M.snr_db(a, a + d), seed001)
    with pytest.raises(ValueError, match="shape"):
        M.snr_db(x, x[..., :50])


def test_label_confidences() -> None:
    logits = torch.tensor([[0.0, math.log(3.0)], [2.0, 0.0]])
    conf_new, conf_true = M.label_confidences(logits, torch.tensor([0, 0]))
    assert conf_new.tolist() == pytest.approx([0.75, 1 / (1 + math.exp(-2))])
    assert conf_true.tolist() == pytest.approx([0.25, 1 / (1 + math.exp(-2))])


def test_confusion_matrix_matches_sklearn() -> None:
    labels = torch.tensor([0, 0, 1, 2, 2, 2, 1])
    preds = torch.tensor([0, 1, 1, 2, 0, 2, 2])
    ours = M.confusion_matrix(labels, preds, 4)
    assert ours.tolist() == sk_confusion(labels.numpy(), preds.numpy(), labels=[0, 1, 2, 3]).tolist()


def test_transfer_matrix_hand_computed() -> None:
    # fooled[a, b, i]: the example crafted on a for example i fools b
    fooled = torch.tensor([[[1, 1, 1, 0], [1, 0, 0, 1]],
                           [[0, 1, 0, 0], [1, 1, 0, 0]]], dtype=torch.bool)
    t = M.transfer_matrix(fooled)
    # a=0 fools itself on 0,1,2; b=1 also fooled on 0 only -> 1/3. a=1 fools itself on 0,1; model 0 on 1 -> 1/2
    assert t.tolist() == [[1.0, pytest.approx(1 / 3)], [0.5, 1.0]]
    none = M.transfer_matrix(torch.zeros(2, 2, 3, dtype=torch.bool))
    assert torch.isnan(none).all()
    with pytest.raises(ValueError, match=r"\(M, M, N\)"):
        M.transfer_matrix(torch.zeros(2, 3, 3, dtype=torch.bool))


def test_median() -> None:
    assert M.median(torch.tensor([4, 1, 3, 2])) == 2.5
    assert M.median(torch.tensor([5])) == 5.0
    assert math.isnan(M.median(torch.zeros(0)))
