"""Figures of an evaluation; each function returns a matplotlib Figure.

Figures are built with matplotlib's object API (``Figure``, no ``pyplot``), so no GUI backend or
display is touched and nothing is kept in pyplot's registry: the caller logs a figure with
``mlflow.log_figure(fig, "plots/<name>.png")`` (or ``fig.savefig``) and simply drops it.

The figures follow seed 004: fooling-rate curves FR(ε) whose area over ``[0, ε_max]`` is the fooling
AUC of Table II, original / adversarial / perturbation spectrograms (its Fig. 1) and the ε_r of
Table III as a heat map; plus clean and adversarial confusion matrices (seed 001).
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING, Mapping, Sequence

import matplotlib
import numpy as np
import pandas as pd
import torch
from matplotlib.colors import TwoSlopeNorm
from matplotlib.figure import Figure
from torch import Tensor

from evaluation import metrics as M
from evaluation import stats

if TYPE_CHECKING:
    from evaluation.examples import Example

ArrayLike = Tensor | np.ndarray | Sequence[float]


def _array(x: ArrayLike) -> np.ndarray:
    if isinstance(x, Tensor):
        return x.detach().cpu().double().numpy()
    return np.asarray(x, dtype=np.float64)


def _image(x: ArrayLike) -> np.ndarray:
    """A representation ``(F, frames)``, ``(1, F, frames)`` or ``(1, 1, F, frames)`` as 2-D."""
    arr = _array(x)
    while arr.ndim > 2 and arr.shape[0] == 1:
        arr = arr[0]
    if arr.ndim != 2:
        raise ValueError(f"a representation must be (F, frames) up to leading 1s, got shape {arr.shape}")
    return arr


CHAR_IN = 0.075
"""Inches per character of a tick label at ``fontsize="small"`` (an upper bound for DejaVu Sans at 8.3 pt)."""


def _fixed_layout(width: float, height: float, *, left: float, right: float, top: float, bottom: float,
                  gap: float = 0.0, ncols: int = 1) -> Figure:
    """A figure of ``width`` × ``height`` inches whose subplots get the given margins and column gaps (inches).

    The per-attack-run figures use this instead of constrained layout, which measures every text before drawing:
    it took 1.5-3× as long per figure (2026-12-04, 2-core CPU), and a grid draws three figures per attack run.
    """
    fig = Figure(figsize=(width, height))
    axes_width = (width - left - right - (ncols - 1) * gap) / ncols
    fig.subplots_adjust(left=left / width, right=1 - right / width, top=1 - top / height, bottom=bottom / height,
                        wspace=gap / axes_width)
    return fig


def fooling_curve_points(eps_star: ArrayLike, eps_max: float, n_grid: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """``(ε, FR(ε))`` for a step plot (``where="post"``) on ``[0, ε_max]``, exact at every jump."""
    stars = _array(eps_star)
    grid = np.linspace(0.0, eps_max, n_grid)
    eps = np.unique(np.concatenate([grid, stars[np.isfinite(stars) & (stars <= eps_max)]]))
    fr = M.fooling_rate(torch.from_numpy(stars), torch.from_numpy(eps)).numpy()
    return eps, fr


def fooling_rate_band(eps_star: ArrayLike, eps: np.ndarray, *, n_boot: int = 1000, level: float = 0.95,
                      seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Pointwise percentile-bootstrap band of FR at ``eps`` (resampling the base set's examples)."""
    stars = _array(eps_star)
    if stars.size == 0:
        nan = np.full(eps.shape, math.nan)
        return nan, nan
    draws = np.sort(stars[stats.bootstrap_indices(stars.size, n_boot, seed)], axis=1)
    fr = np.stack([np.searchsorted(row, eps, side="right") for row in draws]) / stars.size
    tail = (1 - level) / 2
    return np.quantile(fr, tail, axis=0), np.quantile(fr, 1 - tail, axis=0)


def fooling_rate_curves(original: Mapping[str, ArrayLike], eps_max: float,
                        defended: Mapping[str, ArrayLike] | None = None, *, title: str = "",
                        norm: str = "l2", n_boot: int = 1000, level: float = 0.95) -> Figure:
    """FR(ε) of several attacks on one axes: original solid, defended dashed in the same colour, each
    with its pointwise bootstrap band; legends carry the fooling AUC and its interval.

    Args:
        original: attack name → ε* of the original model's base set (``inf`` = never broken).
        eps_max: right end of the ε axis (the AUC's interval).
        defended: attack name → ε* of the adversarially trained model, if any.
        title: axes title.
        norm: norm name for the x label (every curve must be in this norm).
        n_boot: bootstrap resamples for the bands and the AUC intervals (0: no bands).
        level: level of the bands and intervals.
    """
    if not eps_max > 0:
        raise ValueError(f"eps_max must be > 0, got {eps_max}")
    fig = Figure(figsize=(6.5, 4.2), layout="constrained")
    ax = fig.subplots()
    colors = matplotlib.rcParams["axes.prop_cycle"].by_key()["color"]
    names = list(dict.fromkeys([*original, *(defended or {})]))
    for i, name in enumerate(names):
        for model, curves, style in (("original", original, "-"), ("defended", defended or {}, "--")):
            if name in curves:
                stars = _array(curves[name])
                color = colors[i % len(colors)]
                eps, fr = fooling_curve_points(stars, eps_max)
                label = f"{name} ({model}, AUC {M.fooling_auc(torch.from_numpy(stars), eps_max):.2f}"
                if n_boot > 0:
                    auc = stats.clip_summary_intervals(stars, eps_max, n_boot=n_boot, level=level)["fooling_auc"]
                    label += f" [{auc.low:.2f}, {auc.high:.2f}]"
                    low, high = fooling_rate_band(stars, eps, n_boot=n_boot, level=level)
                    ax.fill_between(eps, low, high, step="post", color=color, alpha=0.12, linewidth=0)
                ax.step(eps, fr, where="post", linestyle=style, color=color, label=label + ")")
    ax.set(xlim=(0, eps_max), ylim=(-0.02, 1.02), xlabel=f"ε ({norm})", ylabel="fooling rate FR(ε)",
           title=title or "Fooling-rate curves")
    ax.grid(alpha=0.3)
    if names:
        ax.legend(fontsize="x-small", title=f"AUC over [0, {eps_max:g}], {int(level * 100)} % intervals",
                  title_fontsize="x-small")
    return fig


def confusion_matrices(clean: ArrayLike, adversarial: ArrayLike, class_names: Sequence[str], *,
                       title: str = "") -> Figure:
    """Clean and adversarial confusion matrices side by side (rows true, columns predicted), with the non-zero
    counts annotated (a blank cell is 0: with 50 classes, annotating all 2 x 2,500 cells made one figure take over a
    minute to draw) and one shared colour scale.

    Raises:
        ValueError: if the matrices are not ``(C, C)`` with ``C = len(class_names)``.
    """
    mats = [_array(clean), _array(adversarial)]
    c = len(class_names)
    if any(m.shape != (c, c) for m in mats):
        raise ValueError(f"confusion matrices must be ({c}, {c}), got {[m.shape for m in mats]}")
    size = 2.5 + 0.45 * min(c, 20) + 0.2 * max(c - 20, 0)
    labels = CHAR_IN * max((len(str(name)) for name in class_names), default=1) + 0.45  # tick labels and axis label
    fig = _fixed_layout(2 * size + 1 + 2 * labels, size + labels, left=labels, right=1.0, top=0.7, bottom=labels,
                        gap=labels + 0.2, ncols=2)
    axes = fig.subplots(1, 2)
    vmax = max(float(m.max()) for m in mats) or 1.0
    for ax, mat, name in zip(axes, mats, ("clean", "adversarial")):
        im = ax.imshow(mat, cmap="Blues", vmin=0, vmax=vmax)
        for (r, col), value in np.ndenumerate(mat):
            if value:
                ax.text(col, r, f"{value:g}", ha="center", va="center", fontsize="x-small",
                        color="white" if value > vmax / 2 else "black")
        ax.set_xticks(range(c), class_names, rotation=90, fontsize="small")
        ax.set_yticks(range(c), class_names, fontsize="small")
        ax.set(xlabel="predicted", ylabel="true", title=name)
    width = fig.get_figwidth()
    bottom, top = fig.subplotpars.bottom, fig.subplotpars.top
    bar = fig.add_axes((1 - 0.8 / width, bottom + 0.1 * (top - bottom), 0.15 / width, 0.8 * (top - bottom)))
    fig.colorbar(im, cax=bar, label="examples")
    if title:
        fig.suptitle(title)
    return fig


def perturbation_triplet(original: ArrayLike, adversarial: ArrayLike, *, title: str = "",
                         labels: tuple[str, str] | None = None, units: str = "") -> Figure:
    """Original, adversarial and perturbation (adversarial − original) representations (seed 004 Fig. 1).

    Args:
        original: clean representation ``(F, frames)`` (leading 1-dims allowed).
        adversarial: same shape.
        title: figure title.
        labels: predicted class names ``(clean, adversarial)`` added to the panel titles.
        units: colour-bar label (e.g. ``"dB"`` or ``"normalised"``).

    Returns:
        A figure with three image axes (``origin="lower"``: low frequencies at the bottom) and
        three colour bars; original and adversarial share one colour scale, the perturbation has a
        symmetric diverging one.
    """
    orig, adv = _image(original), _image(adversarial)
    if orig.shape != adv.shape:
        raise ValueError(f"original {orig.shape} and adversarial {adv.shape} differ in shape")
    delta = adv - orig
    lo, hi = float(min(orig.min(), adv.min())), float(max(orig.max(), adv.max()))
    peak = float(np.abs(delta).max()) or 1.0
    fig = _fixed_layout(13.0, 3.6, left=0.65, right=0.8, top=0.7, bottom=0.5, gap=1.35, ncols=3)
    axes = fig.subplots(1, 3)
    names = ["original", "adversarial", "perturbation"]
    if labels is not None:
        names[0] += f" ({labels[0]})"
        names[1] += f" ({labels[1]})"
    panels = ((orig, "magma", lo, hi), (adv, "magma", lo, hi), (delta, "RdBu_r", -peak, peak))
    for ax, (img, cmap, vmin, vmax), name in zip(axes, panels, names):
        im = ax.imshow(img, origin="lower", aspect="auto", cmap=cmap, vmin=vmin, vmax=vmax, interpolation="nearest")
        ax.set(title=name, xlabel="frame", ylabel="band")
        fig.colorbar(im, ax=ax, label=units, fraction=0.05, pad=0.03)
    if title:
        fig.suptitle(title)
    return fig


def adversarial_examples(rows: Sequence[tuple[str, str, Example]], *, title: str = "",
                         units: str = "normalised") -> Figure:
    """Seed 004's Fig. 1: one clip under every attack, per representation.

    One row per ``(representation, attack, example)`` (rows of one representation form a block): the clean
    representation, the adversarial one and their difference, with the perturbation's norm in the attack's norm
    and domain (:meth:`evaluation.examples.Example.norm_text`) on the adversarial and the perturbation panel.
    Clean and adversarial share a colour scale per row, the perturbation has a symmetric diverging one; a
    one-band representation (the raw waveform) is drawn as a line.

    Args:
        rows: ``(representation, attack label, example)``.
        title: figure title.
        units: colour-bar label of the representations.

    Raises:
        ValueError: without rows, or when an example's clean and adversarial representations differ in shape.
    """
    if not rows:
        raise ValueError("no adversarial examples to draw")
    height = 1.0 + 2.3 * len(rows)  # inches; a fixed layout: constrained layout takes twice the drawing time here
    fig = Figure(figsize=(12.0, height))
    fig.subplots_adjust(left=0.06, right=0.97, top=1 - 0.95 / height, bottom=0.45 / height, hspace=0.6, wspace=0.3)
    axes = fig.subplots(len(rows), 3, squeeze=False)
    for (clean_ax, adv_ax, delta_ax), (rep, attack, ex) in zip(axes, rows):
        clean, adv = _image(ex.clean_rep), _image(ex.adv_rep)
        if clean.shape != adv.shape:
            raise ValueError(f"{rep}/{attack}: clean {clean.shape} and adversarial {adv.shape} differ in shape")
        delta = adv - clean
        outcome = f"→ {ex.adv_label}" if ex.broken else "not broken"
        titles = (f"{rep}: clean, clip {ex.index} ({ex.label})", f"{attack} {outcome}\n{ex.norm_text()}",
                  f"{attack}: perturbation\n{ex.norm_text()}")
        if clean.shape[0] == 1:
            for ax, line in ((clean_ax, clean[0]), (adv_ax, adv[0]), (delta_ax, delta[0])):
                ax.plot(line, linewidth=0.5)
                ax.set(xlabel="frame", ylabel=units)
        else:
            lo, hi = float(min(clean.min(), adv.min())), float(max(clean.max(), adv.max()))
            peak = float(np.abs(delta).max()) or 1.0
            for ax, img, cmap, vmin, vmax in ((clean_ax, clean, "magma", lo, hi), (adv_ax, adv, "magma", lo, hi),
                                              (delta_ax, delta, "RdBu_r", -peak, peak)):
                im = ax.imshow(img, origin="lower", aspect="auto", cmap=cmap, vmin=vmin, vmax=vmax,
                               interpolation="nearest")
                ax.set(xlabel="frame", ylabel="band")
                if ax is not clean_ax:  # one bar for the scale clean and adversarial share, one for the perturbation
                    fig.colorbar(im, ax=[clean_ax, adv_ax] if ax is adv_ax else ax, label=units)
        for ax, text in zip((clean_ax, adv_ax, delta_ax), titles):
            ax.set_title(text, fontsize="small")
    if title:
        fig.suptitle(title)
    return fig


def epsilon_ratio_heatmap(values: pd.DataFrame, *, title: str = "", partial: pd.DataFrame | None = None,
                          low: pd.DataFrame | None = None, high: pd.DataFrame | None = None,
                          n: pd.DataFrame | None = None) -> Figure:
    """ε_r heat map: rows representations, columns victims (seed 004 Table III), annotated.

    The diverging colour scale is centred on ε_r = 1 (no gain from adversarial training). Missing
    cells are blank. With ``low``/``high`` each cell shows its interval and verdict (↑ above 1, ↓ below,
    ≈ containing 1; with ``n``, ``?`` below :data:`evaluation.stats.N_MIN` clips, as in Table III).

    Args:
        values: ε_r floats, index = representation (or ``(dataset, representation)``), columns = victims;
            e.g. the first output of :func:`evaluation.report_tables.table_3_values`.
        title: axes title.
        partial: same-shaped bools; a ``*`` marks a mean that includes a partial ε_r.
        low, high: same-shaped interval bounds.
        n: same-shaped clips each verdict rests on (``nan``: not known, e.g. an interval across seeds).
    """
    mat = values.to_numpy(dtype=np.float64)
    rows = [" / ".join(map(str, r)) if isinstance(r, tuple) else str(r) for r in values.index]
    label_width = 0.085 * max((len(r) for r in rows), default=0)  # inches of the longest row label at 10 pt
    fig = Figure(figsize=(2.5 + label_width + 1.5 * max(len(values.columns), 1), 1.5 + 0.7 * max(len(rows), 1)),
                 layout="constrained")
    ax = fig.subplots()
    finite = mat[np.isfinite(mat)]
    if finite.size:
        spread = max(float(np.abs(finite - 1.0).max()), 1e-3)
        norm = TwoSlopeNorm(vcenter=1.0, vmin=1.0 - spread, vmax=1.0 + spread)
        im = ax.imshow(np.ma.masked_invalid(mat), cmap="RdYlGn", norm=norm, aspect="auto")
        fig.colorbar(im, ax=ax, label="ε_r")
    for (r, c), value in np.ndenumerate(mat):
        if math.isfinite(value):
            star = "*" if partial is not None and bool(partial.iat[r, c]) else ""
            text = f"{value:.2f}{star}"
            if low is not None and high is not None:
                lo, hi = float(low.iat[r, c]), float(high.iat[r, c])
                clips = float(n.iat[r, c]) if n is not None else None
                text += f" {stats.verdict(lo, hi, clips)}\n[{lo:.2f}, {hi:.2f}]"
            ax.text(c, r, text, ha="center", va="center", fontsize="small")
    ax.set_xticks(range(len(values.columns)), [str(c) for c in values.columns], rotation=30, ha="right")
    ax.set_yticks(range(len(rows)), rows)
    ax.set(xlim=(-0.5, len(values.columns) - 0.5), ylim=(len(rows) - 0.5, -0.5), xlabel="victim",
           ylabel="representation", title=title or "ε_r (adversarially trained / original)")
    return fig


def certified_accuracy_curve(pred: ArrayLike, radius: ArrayLike, labels: ArrayLike, *, title: str = "",
                             units: str = "", level: float = 0.95, marks: Sequence[float] = ()) -> Figure:
    """Certified accuracy against the L2 radius r (Cohen, Rosenfeld & Kolter 2019, Fig. 1): the share of clips
    whose smoothed prediction is correct and certified at radius ≥ r (abstentions count as wrong), a step
    function falling from the smoothed accuracy at r = 0, with its pointwise Wilson band; the area under it is
    the mean certified radius of correct clips. ``marks`` draws the radii the tables report."""
    pred_a, radius_a, labels_a = _array(pred), _array(radius), _array(labels)
    correct = pred_a == labels_a
    n = len(labels_a)
    top = float(radius_a[correct].max()) if correct.any() else 1.0
    r = np.linspace(0.0, 1.05 * top if top > 0 else 1.0, 256)
    acc = np.array([(correct & (radius_a >= x)).mean() if n else math.nan for x in r])
    band = np.array([stats.wilson_interval(float(a), n, level) for a in acc])
    fig = Figure(figsize=(6.0, 4.0), layout="constrained")
    ax = fig.subplots()
    ax.fill_between(r, band[:, 0], band[:, 1], step="post", alpha=0.15, linewidth=0)
    ax.step(r, acc, where="post", label=f"certified accuracy (area {float(np.where(correct, radius_a, 0).mean()):.3g})")
    for x in marks:
        ax.axvline(x, color="grey", linestyle=":", linewidth=0.8)
    ax.set(xlim=(0, r[-1]), ylim=(-0.02, 1.02), xlabel=f"L2 radius r{f' ({units})' if units else ''}",
           ylabel="certified accuracy", title=title or "Certified accuracy (randomized smoothing)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="x-small", title=f"{n} clips, {int(level * 100)} % Wilson band", title_fontsize="x-small")
    return fig


QUALITY_AXES = {"snr_db": "SNR (dB)", "perceptual_db": "perceptual distance\n(dB above masking threshold)",
                "pesq": "PESQ (MOS-LQO)", "stoi": "STOI"}


def quality_against_eps(eps_star: ArrayLike, scores: Mapping[str, ArrayLike], *, eps_max: float, title: str = "",
                        units: str = "") -> Figure:
    """Each adversarial example's quality scores against its ε*, one panel per score (issue 20: can a listener
    hear it?); clips without a score (not broken, or ruled out) are left out and counted in the panel's title."""
    stars = _array(eps_star)
    names = [name for name in QUALITY_AXES if name in scores]
    fig = _fixed_layout(3.2 * max(1, len(names)), 3.4, left=1.0, right=0.2, top=0.7, bottom=0.5, gap=1.05,
                        ncols=max(1, len(names)))
    axes = np.atleast_1d(fig.subplots(1, max(1, len(names))))
    for ax, name in zip(axes, names):
        values = _array(scores[name])
        shown = np.isfinite(stars) & np.isfinite(values)
        ax.scatter(stars[shown], values[shown], s=12, alpha=0.7)
        ax.axvline(eps_max, color="grey", linestyle=":", linewidth=0.8)
        if name == "perceptual_db":
            ax.axhline(0.0, color="grey", linestyle="--", linewidth=0.8)
        ax.set(xlabel=f"ε*{f' ({units})' if units else ''}", ylabel=QUALITY_AXES[name],
               title=f"{int(shown.sum())} of {int(np.isfinite(stars).sum())} broken clips")
        ax.title.set_fontsize("small")
        ax.grid(alpha=0.3)
    fig.suptitle(title or "Quality of the adversarial examples")
    return fig
