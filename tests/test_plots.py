"""Figures: the right number of axes and lines, the plotted values against hand-computed ones."""
from __future__ import annotations

import io
import math

import numpy as np
import pandas as pd
import pytest
import torch

from evaluation import plots as P
from evaluation.examples import Example


def test_fooling_rate_curves_lines_values_and_auc() -> None:
    stars = torch.tensor([0.5, 1.0, math.inf, 2.0], dtype=torch.float64)
    fig = P.fooling_rate_curves({"bim_a": stars, "nes_pia": [0.1, 0.2]}, 3.0,
                                {"bim_a": stars * 2, "nes_pia": [math.inf, 4.0]}, title="t", n_boot=0)
    (ax,) = fig.axes
    lines = ax.get_lines()
    assert len(lines) == 4
    assert [line.get_linestyle() for line in lines] == ["-", "--", "-", "--"]
    assert lines[0].get_color() == lines[1].get_color() != lines[2].get_color()
    # AUC = mean(max(0, 3 - eps*)) / 3 = (2.5 + 2 + 0 + 1) / 12
    assert lines[0].get_label() == "bim_a (original, AUC 0.46)"
    x, y = (np.asarray(a) for a in lines[0].get_data())
    assert y[np.searchsorted(x, 0.5)] == 0.25 and y[np.searchsorted(x, 0.5) - 1] == 0.0
    assert y[-1] == 0.75 and x[-1] == 3.0 and y[np.searchsorted(x, 1.5)] == 0.5
    assert lines[3].get_data()[1].max() == 0.0  # never broken within eps_max
    only_original = P.fooling_rate_curves({"bim_a": stars}, 3.0, n_boot=0)
    assert len(only_original.axes[0].get_lines()) == 1
    with pytest.raises(ValueError, match="eps_max"):
        P.fooling_rate_curves({"bim_a": stars}, 0.0)


def test_fooling_rate_curves_show_bootstrap_bands_and_auc_intervals() -> None:
    stars = np.array([0.5, 1.0, math.inf, 2.0, 0.25, 1.5, 2.5, 0.75])
    fig = P.fooling_rate_curves({"bim_a": stars}, 3.0, {"bim_a": stars * 2}, n_boot=200)
    (ax,) = fig.axes
    assert len(ax.collections) == 2  # one band per curve
    label = ax.get_lines()[0].get_label()
    low, high = (float(v) for v in label.split("[")[1].rstrip("])").split(", "))
    auc = float(np.mean(np.clip(3.0 - stars, 0, None)) / 3.0)
    assert low <= auc <= high and low < high
    eps = np.linspace(0, 3, 31)
    lo, hi = P.fooling_rate_band(stars, eps, n_boot=200)
    fr = (stars[None, :] <= eps[:, None]).mean(axis=1)
    assert (lo <= fr + 1e-12).all() and (fr <= hi + 1e-12).all() and (hi - lo).max() > 0
    assert np.array_equal(*P.fooling_rate_band(np.full(5, 1.0), eps, n_boot=50))  # no spread, no band


def test_confusion_matrices_annotated_with_class_names() -> None:
    names = ["guitar", "organ", "voice"]
    clean = torch.tensor([[3, 0, 0], [0, 2, 1], [0, 0, 4]])
    adv = torch.tensor([[0, 3, 0], [1, 0, 2], [0, 4, 0]])
    fig = P.confusion_matrices(clean, adv, names, title="cm")
    assert len(fig.axes) == 3  # two matrices and one shared colour bar
    left, right = fig.axes[:2]
    assert [t.get_text() for t in left.get_xticklabels()] == names
    assert [t.get_text() for t in right.get_yticklabels()] == names
    assert [t.get_text() for t in right.texts] == [str(int(v)) for v in adv.flatten() if v]  # zeros blank
    assert left.images[0].get_clim() == right.images[0].get_clim() == (0.0, 4.0)
    with pytest.raises(ValueError, match=r"must be \(3, 3\)"):
        P.confusion_matrices(clean[:2, :2], adv, names)


def test_perturbation_triplet_scales() -> None:
    orig = torch.arange(12.0).view(1, 1, 3, 4)
    adv = orig.clone()
    adv[0, 0, 2, 3] += 2.0  # raises the maximum from 11 to 13
    adv[0, 0, 0, 0] -= 0.5
    fig = P.perturbation_triplet(orig, adv, labels=("guitar", "organ"), units="dB")
    assert len(fig.axes) == 6  # three images, three colour bars
    images = [ax.images[0] for ax in fig.axes[:3]]
    assert all(im.origin == "lower" for im in images)
    assert images[0].get_clim() == images[1].get_clim() == (-0.5, 13.0)
    assert images[2].get_clim() == (-2.0, 2.0)
    np.testing.assert_allclose(np.asarray(images[2].get_array()), (adv - orig)[0, 0].numpy())
    assert fig.axes[1].get_title() == "adversarial (organ)"
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    assert buf.getvalue()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ValueError, match="differ in shape"):
        P.perturbation_triplet(orig, adv[..., :3])


def test_epsilon_ratio_heatmap_annotations() -> None:
    index = pd.MultiIndex.from_tuples([("gm", "stft_db_small"), ("gm", "cwt_tonnetz_small")],
                                      names=["dataset", "representation"])
    values = pd.DataFrame([[2.0, math.nan], [0.8, 1.2]], index=index, columns=["alexnet", "resnet18"])
    partial = pd.DataFrame([[False, False], [False, True]], index=index, columns=values.columns)
    fig = P.epsilon_ratio_heatmap(values, partial=partial)
    ax = fig.axes[0]
    assert len(fig.axes) == 2
    assert sorted(t.get_text() for t in ax.texts) == ["0.80", "1.20*", "2.00"]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["gm / stft_db_small", "gm / cwt_tonnetz_small"]
    norm = ax.images[0].norm
    assert norm.vcenter == 1.0 and norm.vmax == pytest.approx(2.0) and norm.vmin == pytest.approx(0.0)
    low = pd.DataFrame([[1.5, math.nan], [0.6, 0.9]], index=index, columns=values.columns)
    high = pd.DataFrame([[2.6, math.nan], [0.95, 1.4]], index=index, columns=values.columns)
    with_ci = P.epsilon_ratio_heatmap(values, low=low, high=high)
    assert sorted(t.get_text() for t in with_ci.axes[0].texts) == [
        "0.80 ↓\n[0.60, 0.95]", "1.20 ≈\n[0.90, 1.40]", "2.00 ↑\n[1.50, 2.60]"]
    clips = pd.DataFrame([[7.0, math.nan], [40.0, math.nan]], index=index, columns=values.columns)
    with_n = P.epsilon_ratio_heatmap(values, low=low, high=high, n=clips)  # Table III's rule: '?' under N_MIN clips
    assert sorted(t.get_text() for t in with_n.axes[0].texts) == [
        "0.80 ↓\n[0.60, 0.95]", "1.20 ≈\n[0.90, 1.40]", "2.00 ?\n[1.50, 2.60]"]
    empty = P.epsilon_ratio_heatmap(values * math.nan)
    assert len(empty.axes) == 1 and not empty.axes[0].texts


def test_certified_accuracy_curve_steps_down_from_the_smoothed_accuracy() -> None:
    from evaluation.certify import certified_curve_area
    from evaluation.plots import certified_accuracy_curve

    pred, radius, labels = [0, 1, -1, 1], [0.5, 0.25, 0.0, 1.0], [0, 0, 1, 1]  # correct: clips 0 and 3
    fig = certified_accuracy_curve(pred, radius, labels, marks=[0.25])
    line = fig.axes[0].lines[0]
    r, acc = line.get_xdata(), line.get_ydata()
    assert acc[0] == 0.5 and acc[-1] == 0.0  # smoothed accuracy at r = 0; nothing certified past the largest radius
    assert acc[(r > 0.5) & (r <= 1.0)].max() == 0.25 and bool((acc[:-1] >= acc[1:]).all())
    area = certified_curve_area(torch.tensor(pred), torch.tensor(radius, dtype=torch.float64), torch.tensor(labels))
    assert f"area {area:.3g}" in line.get_label() and area == (0.5 + 1.0) / 4


def _example(rng: np.random.Generator, *, domain: str = "representation", norm: str = "l2", bands: int = 5,
             broken: bool = True, index: int = 3) -> Example:
    clean = rng.normal(size=(bands, 7)).astype(np.float32)
    adv = (clean + rng.normal(scale=0.1, size=clean.shape)).astype(np.float32)
    waves = (rng.uniform(-0.5, 0.5, 40).astype(np.float32), None)
    if domain == "waveform":
        waves = (waves[0], (waves[0] + rng.normal(scale=0.01, size=40)).astype(np.float32))
    return Example(index, "flute", "hi_hat" if broken else "flute", broken, 0.5 if broken else math.inf, domain, norm,
                   clean, adv, *(waves if domain == "waveform" else (None, None)))


@pytest.mark.timeout(60)
def test_adversarial_examples_panels_scales_and_norms_by_hand() -> None:
    """Seed 004's Fig. 1: a row of clean / adversarial / perturbation per (representation, attack); the norm of
    the attack's own norm and domain, computed here from the arrays, on the adversarial and perturbation panels."""
    rng = np.random.default_rng(0)
    rows = [("stft", "bim_a", _example(rng)), ("stft", "pgd_linf", _example(rng, norm="linf")),
            ("stft", "noise", _example(rng, domain="waveform", broken=False)),
            ("waveform", "jsma", _example(rng, norm="l0", bands=1))]
    fig = P.adversarial_examples(rows, title="t")
    panels = [ax for ax in fig.axes if ax.get_title()]
    assert len(panels) == 3 * len(rows)
    assert sum(bool(ax.get_images()) for ax in panels) == 9 and sum(bool(ax.get_lines()) for ax in panels) == 3
    deltas = [ex.adv_rep.astype(float) - ex.clean_rep for _, _, ex in rows]
    wave_delta = rows[2][2].adv_input.astype(float) - rows[2][2].clean_input
    by_hand = [f"‖δ‖₂ = {np.linalg.norm(deltas[0]):.4g} (representation)",
               f"‖δ‖∞ = {np.abs(deltas[1]).max():.4g} (representation)",
               f"‖δ‖₂ = {np.linalg.norm(wave_delta):.4g} (waveform)",
               f"‖δ‖₀ = {np.count_nonzero(deltas[3])} (representation)"]
    for r, ((rep, attack, ex), text) in enumerate(zip(rows, by_hand)):
        clean, adv, delta = panels[3 * r:3 * r + 3]
        assert clean.get_title() == f"{rep}: clean, clip 3 (flute)"
        outcome = "→ hi_hat" if ex.broken else "not broken"
        assert adv.get_title() == f"{attack} {outcome}\n{text}"
        assert delta.get_title() == f"{attack}: perturbation\n{text}"
        if clean.get_images():
            (a,), (b,), (d,) = clean.get_images(), adv.get_images(), delta.get_images()
            assert a.get_clim() == b.get_clim() == (min(ex.clean_rep.min(), ex.adv_rep.min()),
                                                    max(ex.clean_rep.max(), ex.adv_rep.max()))
            peak = np.abs(ex.adv_rep - ex.clean_rep).max()
            assert d.get_clim() == pytest.approx((-peak, peak))
            np.testing.assert_allclose(d.get_array(), ex.adv_rep.astype(float) - ex.clean_rep)
    assert fig._suptitle.get_text() == "t"
    with pytest.raises(ValueError, match="no adversarial examples"):
        P.adversarial_examples([])
    bad = _example(rng)
    bad.adv_rep = bad.adv_rep[:, :3]
    with pytest.raises(ValueError, match="differ in shape"):
        P.adversarial_examples([("stft", "bim_a", bad)])


@pytest.mark.timeout(60)
def test_epsilon_ratio_heatmap_keeps_long_row_labels_inside_the_figure() -> None:
    """One victim and Table III's long rows (data set / representation / attack group): every label is drawn whole
    (it was cut at the figure's left edge, and constrained layout gave up)."""
    import warnings

    rows = [("gm_instruments", "stft_tonnetz_128", f"l2: {a}") for a in ("bim_a", "deepfool_l2", "nes_pia")]
    values = pd.DataFrame([[1.4], [1.2], [0.9]], index=pd.MultiIndex.from_tuples(rows), columns=["resnet18"])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # "constrained_layout not applied because axes sizes collapsed to zero"
        fig = P.epsilon_ratio_heatmap(values, low=values - 0.1, high=values + 0.1)
        fig.savefig(io.BytesIO(), format="png")
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    renderer = FigureCanvasAgg(fig).get_renderer()
    fig.draw(renderer)
    width = fig.bbox.width
    for label in fig.axes[0].get_yticklabels():
        box = label.get_window_extent(renderer)
        assert 0 <= box.x0 and box.x1 <= width, label.get_text()


@pytest.mark.timeout(120)
@pytest.mark.parametrize("figure", ["confusion_esc50", "confusion_2", "triplet", "quality"])
def test_fixed_layout_figures_draw_every_text_inside_and_no_panel_over_another(figure: str) -> None:
    """The per-attack-run figures place their panels by hand (no constrained layout, for speed): with ESC-50's 50
    class names, two short ones, a triplet and all four quality scores, nothing drawn leaves the figure and no
    panel's labels run into the next panel or colour bar."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    from training.data.standin import ESC50_CLASSES

    rng = np.random.default_rng(0)
    if figure.startswith("confusion"):
        names = list(ESC50_CLASSES) if figure == "confusion_esc50" else ["flute", "hi_hat"]
        mat = np.diag(rng.integers(1, 30, len(names))).astype(float)
        fig = P.confusion_matrices(mat, mat[::-1], names, title="esc50 / stft_db_128 / resnet18 / none / bim_a")
    elif figure == "triplet":
        fig = P.perturbation_triplet(rng.normal(0, 40, (129, 16)), rng.normal(0, 40, (129, 16)), title="t",
                                     labels=("seven", "one"), units="normalised")
    else:
        stars = np.r_[rng.random(10), math.inf]
        scores = {k: rng.normal(0, 20, 11) for k in ("snr_db", "perceptual_db", "pesq", "stoi")}
        fig = P.quality_against_eps(stars, scores, eps_max=0.5, title="t", units="l2")
    renderer = FigureCanvasAgg(fig).get_renderer()
    fig.draw(renderer)
    drawn = fig.get_tightbbox(renderer)  # inches, every drawn artist (ticks outside the view are not drawn)
    width, height = fig.get_size_inches()
    assert drawn.x0 >= 0 and drawn.y0 >= 0 and drawn.x1 <= width and drawn.y1 <= height, (drawn, width, height)
    row = sorted(fig.axes, key=lambda ax: ax.get_position().x0)  # the panels and colour bars, left to right
    boxes = [ax.get_tightbbox(renderer) for ax in row]
    for left, right in zip(boxes, boxes[1:]):
        assert left.x1 <= right.x0, (figure, left, right)
