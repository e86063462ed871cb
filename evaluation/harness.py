"""Evaluation harness: ε* per example, the fooling-rate curve and the summary metrics of one attack.

The definitions are those of :mod:`evaluation.metrics` (SPEC "Evaluation", seed 004):

- Base set: evaluation examples the victim classifies correctly on clean input (report its size).
- Minimal perturbation ε*ᵢ: for a minimum-norm attack (DeepFool, C&W, L-BFGS, JSMA, and NES with
  ``search``; ``Attack.fixed_budget`` False) the norm of what it found; for a fixed-budget attack (FGSM,
  BIM, PGD, NES) the smallest budget at which it succeeds, found by a budget sweep refined by bisection;
  ∞ where it never succeeds up to the search range.

Two budgets, in the attack's own norm and domain: ``eps_max`` closes the fooling AUC, FR(ε_max) and
every summary metric measured "at a budget" (seed 004: ‖ε‖₂ ≤ 3); ``search_eps_max ≥ eps_max`` is how
far ε* is searched (seed 004 allocates budgets for ε_r "without the condition ‖ε‖₂ ≤ 3").

How ε* is found for a fixed-budget attack (a cascade over still-unbroken examples, auto-attack style):

1. Budget grid up to ``search_eps_max`` (:func:`budget_grid`): geometric by default,
   ε_k = search_eps_max·2^(k−K+1) for k = 0…K−1, or linear, ε_k = search_eps_max·(k+1)/K.
2. Sweep: the grid is cut into chunks of ``sweep_chunk`` budgets; each chunk is one attack call with
   that batch of budgets on the examples not yet broken. An example broken at budget k is not attacked
   again at larger budgets.
3. Refinement to a stated relative resolution: each broken example's bracket (last failing budget,
   first succeeding budget] is bisected at its geometric midpoint √(lo·hi) until
   ``(hi − lo) ≤ rtol·hi`` (default 5 %, four steps from a factor-2 bracket). An example broken at the
   grid's smallest budget has no failing budget yet: its budget is halved until the attack fails or
   the floor ``eps_floor`` (default ε₀/1024) is reached; ε* on the floor is reported, counted
   (``eps_floor_share``) and warned about when it exceeds 10 % of the broken examples. ε* is the upper
   end, so the attack succeeds at ε* and failed just below it. Examples with the same bracket share a
   call, so brackets stay on one lattice and calls stay batched; an attack that takes one budget per
   example (``Attack.per_example_budgets``) refines every example in one call per step.

A minimum-norm attack runs once per mini-batch; its ε* is exact (resolution 0): the norm of the example it
returns, which succeeds. NES with ``search`` is one: a black-box attack pays its whole query budget in every
run, so instead of a run per budget and bisection step (each failing run spends every query) it grows and
shrinks its radius in one run per clip (Ilyas et al.'s ε schedule, :mod:`attacks.nes`) and returns the
smallest adversarial example it found; its clips' queries are in ``total_queries`` (= ``queries``).
Stochastic attacks (NES, noise, PGD's random start) draw fresh noise in every call, so their ε* is the
smallest budget at which one draw succeeded; pass ``seed`` to make a run reproducible.
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field

import torch
from torch import Tensor

from attacks.base import Attack, AttackResult
from evaluation import metrics as M
from evaluation.config import EvalConfig
from evaluation.quality import SCORES, example_scores
from victims.victim import Victim

log = logging.getLogger(__name__)
GRIDS = ("geometric", "linear")
FLOOR_WARN_SHARE = 0.1
MAX_REFINE_STEPS = 64


@dataclass
class AttackEvaluation:
    """Everything one attack evaluation produced; per-example fields cover the base set (``n``).

    Attributes:
        attack: name of the attack.
        domain, norm, targeted, fixed_budget: the attack's settings.
        eps_max: right end of the fooling AUC, FR(ε_max) and the summary metrics (seed 004's 3).
        search_eps_max: largest budget searched for ε* (≥ ``eps_max``).
        rtol: requested relative resolution of ε* (fixed-budget attacks).
        eps_floor: smallest budget the refinement tries.
        epsilons: ``(K,)`` the sweep grid.
        num_classes: the victim's number of classes.
        labels, clean_pred: ``(N,)`` labels and clean predictions of every evaluated example.
        base: ``(N,)`` bool, the base set (clean prediction correct).
        targets: ``(n,)`` target labels of a targeted attack, else ``None``.
        eps_star: ``(n,)`` float64 minimal perturbation, ``inf`` if never broken within the search range.
        eps_lower: ``(n,)`` largest budget known to fail (ε* ∈ (eps_lower, eps_star]); equals ε*
            for minimum-norm attacks.
        sweep_success: ``(K, n)`` int8 raw success of the sweep: 1, 0, or −1 where the cascade did
            not attack (already broken at a smaller budget).
        adversarial: ``(n, ...)`` adversarial input in ``domain`` at ε* (or at the search range if never broken).
        adv_logits: ``(n, C)`` logits of ``adversarial``.
        norms: ``(n,)`` actual perturbation norm of ``adversarial`` in ``norm``.
        iterations, queries: ``(n,)`` int64 of the run that produced ``adversarial``.
        total_queries: ``(n,)`` int64 model evaluations spent on the example over all calls.
        snr_db: ``(n,)`` SNR of ``adversarial`` (waveform domain; ``nan`` in the representation domain).
        perceptual_db, pesq, stoi: ``(n,)`` float64 perceptual quality of each broken clip's ``adversarial``
            (:func:`evaluation.quality.example_scores`; waveform domain with ``quality``, else ``None``); ``nan``
            for a clip not broken or a score ruled out, ``quality_notes`` counting the reasons.
        attack_calls: number of attack calls made.
        summary: metrics ready to log (see :func:`summarize`).
    """

    attack: str
    domain: str
    norm: str
    targeted: bool
    fixed_budget: bool
    eps_max: float
    search_eps_max: float
    rtol: float
    eps_floor: float
    epsilons: Tensor
    num_classes: int
    labels: Tensor
    clean_pred: Tensor
    base: Tensor
    targets: Tensor | None
    eps_star: Tensor
    eps_lower: Tensor
    sweep_success: Tensor
    total_queries: Tensor
    adversarial: Tensor | None = None
    adv_logits: Tensor | None = None
    norms: Tensor | None = None
    iterations: Tensor | None = None
    queries: Tensor | None = None
    snr_db: Tensor | None = None
    perceptual_db: Tensor | None = None
    pesq: Tensor | None = None
    stoi: Tensor | None = None
    quality_notes: dict[str, dict[str, int]] = field(default_factory=dict)
    attack_calls: int = 0
    summary: dict[str, float] = field(default_factory=dict)

    @property
    def base_index(self) -> Tensor:
        """``(n,)`` indices of the base set among the evaluated examples."""
        return self.base.nonzero().flatten()

    @property
    def success(self) -> Tensor:
        """``(n,)`` bool: broken within the search range."""
        return torch.isfinite(self.eps_star)

    @property
    def within_eps_max(self) -> Tensor:
        """``(n,)`` bool: broken within ``eps_max`` (the budget the summary metrics are measured at)."""
        return self.eps_star <= self.eps_max

    @property
    def on_floor(self) -> Tensor:
        """``(n,)`` bool: broken at the refinement's floor (ε* is then only an upper bound)."""
        return self.success & (self.eps_lower == 0) & (self.eps_star <= self.eps_floor) & bool(self.fixed_budget)

    def eps_clip(self) -> Tensor:
        """``(N,)`` float64 ε* over every evaluated clip: ``nan`` outside the base set (the encoding of
        :mod:`evaluation.stats`)."""
        out = torch.full((self.labels.numel(),), math.nan, dtype=torch.float64)
        out[self.base_index] = self.eps_star
        return out

    def fooling_curve(self, eps: Tensor | float) -> Tensor:
        """FR(ε) of the base set at the budget(s) ``eps``."""
        return M.fooling_rate(self.eps_star, eps)

    def confusion(self, adversarial: bool) -> Tensor:
        """``(C, C)`` confusion matrix on clean input, or under attack at ``eps_max`` (examples outside
        the base set, or not broken within ``eps_max``, keep their clean prediction)."""
        pred = self.clean_pred.clone()
        if adversarial and self.adv_logits is not None:
            hit = self.within_eps_max
            pred[self.base_index[hit]] = self.adv_logits[hit].argmax(dim=1)
        return M.confusion_matrix(self.labels, pred, self.num_classes)


def budget_grid(eps_max: float, n_budgets: int, kind: str = "geometric") -> Tensor:
    """The sweep's budgets ``(K,)`` float64, increasing, ending at ``eps_max`` (see module docstring)."""
    if not eps_max > 0 or not math.isfinite(eps_max):
        raise ValueError(f"eps_max must be a finite number > 0, got {eps_max}")
    if n_budgets < 1:
        raise ValueError(f"n_budgets must be >= 1, got {n_budgets}")
    k = torch.arange(n_budgets, dtype=torch.float64)
    if kind == "geometric":
        return eps_max * 2.0 ** (k - (n_budgets - 1))
    if kind == "linear":
        return eps_max * (k + 1) / n_budgets
    raise ValueError(f"unknown budget grid '{kind}'; known: {', '.join(GRIDS)}")


def evaluate_attack(victim: Victim, attack: Attack, waves: Tensor, labels: Tensor, *, eps_max: float,
                    search_eps_max: float | None = None, n_budgets: int = 8, rtol: float = 0.05,
                    n_bisect: int | None = None, eps_floor: float | None = None, batch_size: int = 64,
                    targets: Tensor | None = None, grid: str = "geometric", sweep_chunk: int = 2,
                    snr_trim: int = 0, name: str | None = None, seed: int | None = None,
                    quality: bool = False) -> AttackEvaluation:
    """Attack the base set of ``waves`` and measure ε*, the fooling-rate curve and the summary metrics.

    Args:
        victim: the model under attack (its mode is restored afterwards).
        attack: a fixed-budget or minimum-norm attack.
        waves: ``(N, 1, T)`` evaluation waveforms (any device; batches go to the victim's device).
        labels: ``(N,)`` true labels.
        eps_max: budget of the fooling AUC, FR(ε_max) and the summary metrics, in the attack's norm and
            domain (seed 004: 3, L2, representation).
        search_eps_max: largest budget searched for ε* (default ``eps_max``; must be ≥ ``eps_max``).
        n_budgets: size of the sweep grid.
        rtol: relative resolution of ε* for fixed-budget attacks: refinement stops once
            ``ε* − eps_lower ≤ rtol·ε*``.
        n_bisect: cap on refinement steps per example (``None``: until ``rtol`` or the floor).
        eps_floor: smallest budget tried (default: the grid's smallest budget / 1024).
        batch_size: examples per attack call.
        targets: ``(N,)`` target labels for a targeted attack.
        grid: ``"geometric"`` or ``"linear"``.
        sweep_chunk: budgets per attack call in the sweep (1 = pure cascade).
        snr_trim: samples trimmed at each end for the SNR (seed 000: 2048).
        name: attack name for the record (defaults to the class name).
        seed: seed for the attack's randomness (the caller's RNG state is left untouched).
        quality: score each broken clip's waveform example (perceptual distance, PESQ, STOI:
            :func:`evaluation.quality.example_scores`) beside its SNR.

    Raises:
        ValueError: on mismatched shapes, a target equal to the label, or bad settings.
    """
    if waves.dim() != 3 or waves.shape[0] != labels.shape[0]:
        raise ValueError(f"waves must be (N, 1, T) matching labels (N,), got {tuple(waves.shape)} "
                         f"and {tuple(labels.shape)}")
    if batch_size < 1 or sweep_chunk < 1 or (n_bisect is not None and n_bisect < 0) or not 0 <= rtol < 1:
        raise ValueError(f"batch_size and sweep_chunk must be >= 1, n_bisect >= 0 and 0 <= rtol < 1, "
                         f"got {batch_size}, {sweep_chunk}, {n_bisect}, {rtol}")
    search = float(eps_max if search_eps_max is None else search_eps_max)
    if search < eps_max:
        raise ValueError(f"search_eps_max {search:g} must be >= eps_max {eps_max:g}: ε* must be searched at "
                         "least as far as the budget the metrics are read at")
    if attack.targeted != (targets is not None):
        given = "given" if targets is not None else "missing"
        raise ValueError(f"attack targeted={attack.targeted} but targets {given}")
    epsilons = budget_grid(search, n_budgets, grid)
    floor = float(eps_floor) if eps_floor is not None else float(epsilons[0]) / 1024
    device = victim_device(victim)
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices, enabled=seed is not None):
        if seed is not None:
            torch.manual_seed(seed)
        clean_pred = _predict(victim, waves, batch_size, device)
        labels = labels.cpu().long()
        ev = _start(victim, attack, labels, clean_pred, targets, name, float(eps_max), search, rtol, floor, epsilons)
        runner = _Runner(victim, attack, ev, waves[ev.base_index.to(waves.device)], device, sweep_chunk, n_bisect)
        todo = torch.arange(ev.eps_star.numel())
        for start in range(0, todo.numel(), batch_size):
            runner.run(todo[start:start + batch_size])
    if ev.domain == "waveform" and ev.adversarial is not None:
        base_waves = waves[ev.base_index.to(waves.device)].cpu()
        ev.snr_db = M.snr_db(base_waves, ev.adversarial.to(waves.dtype), snr_trim)
        if quality:
            _score_examples(ev, base_waves, victim.sample_rate)
    ev.summary = summarize(ev)
    if ev.summary["eps_floor_share"] > FLOOR_WARN_SHARE:
        log.warning("%s: %.0f %% of the broken examples sit on the search floor %.3g (their ε* is an upper "
                    "bound); lower eps_floor or raise n_budgets", ev.attack, 100 * ev.summary["eps_floor_share"],
                    floor)
    log.info("%s: base %d, fooling AUC %.3f, FR(eps_max) %.3f, %d calls", ev.attack, ev.summary["base_size"],
             ev.summary["fooling_auc"], ev.summary["fr_at_eps_max"], ev.attack_calls)
    return ev


def _score_examples(ev: AttackEvaluation, base_waves: Tensor, sample_rate: int) -> None:
    """Quality scores of the broken clips' examples onto ``ev`` (see :func:`evaluation.quality.example_scores`)."""
    broken = ev.success
    found, ev.quality_notes = example_scores(base_waves[broken], ev.adversarial[broken].cpu().to(base_waves.dtype),
                                             sample_rate)
    for name, values in found.items():
        full = torch.full((broken.numel(),), math.nan, dtype=torch.float64)
        full[broken] = values
        setattr(ev, name, full)
    for name, reasons in ev.quality_notes.items():
        for why, count in reasons.items():
            log.info("%s: no %s for %d clips: %s", ev.attack, name, count, why)


METRIC_BUDGETS = {
    "fooling_auc": "eps_max", "fr_at_eps_max": "eps_max", "adv_accuracy": "eps_max", "snr_db": "eps_max",
    "perceptual_db": "eps_max", "pesq": "eps_max", "stoi": "eps_max", "masked_share": "eps_max",
    "median_iterations": "eps_max", "median_queries": "eps_max", "conf_adv_label": "eps_max",
    "conf_true_label": "eps_max", "eps_090": "search_eps_max", "mean_eps_star": "search_eps_max",
    "mean_eps_star_within_eps090": "search_eps_max", "adv_accuracy_at_search_eps_max": "search_eps_max",
}
"""The budget each summary metric is measured at (logged beside the metrics)."""


def evaluate(victim: Victim, attack: Attack, waves: Tensor, labels: Tensor, config: EvalConfig, *,
             targets: Tensor | None = None, name: str | None = None) -> AttackEvaluation:
    """:func:`evaluate_attack` with an experiment's whole ``evaluation:`` settings: the budgets of the
    attack's own domain and norm (``config.budgets``), resolution, batching, SNR trim and seed.

    Raises:
        ConfigError: when ``config`` has no budget for the attack's domain and norm.
    """
    eps_max, search = config.budgets(attack.domain, attack.norm, name or "")
    return evaluate_attack(victim, attack, waves, labels, eps_max=eps_max, search_eps_max=search,
                           n_budgets=config.n_budgets, rtol=config.eps_rtol, batch_size=config.batch_size,
                           targets=targets, sweep_chunk=config.sweep_chunk, snr_trim=config.snr_trim, name=name,
                           seed=config.seed, quality=config.quality)


def summarize(ev: AttackEvaluation) -> dict[str, float]:
    """Summary metrics of an evaluation, as floats with MLflow-ready names.

    Each metric is measured at the budget :data:`METRIC_BUDGETS` names. ``adv_accuracy`` is the accuracy
    under attack at ``eps_max``; ``snr_db``, the quality scores (only where they were computed),
    ``median_iterations``, ``median_queries`` and the confidences are means/medians over the examples broken within
    ``eps_max``, each at its own ε*.
    ``eps_090`` and the mean ε* use the whole search range; ``eps_090`` is ``inf`` when FR never reaches
    0.9 there (``eps090_reached`` = 0); MLflow's SQL store saves ``inf`` as the largest float64.
    ``eps_star_resolution`` is the largest achieved relative bracket (ε* − lower)/ε* off the floor.
    """
    n, broken = int(ev.base.sum()), ev.success
    within = ev.within_eps_max
    eps090 = M.eps_at_rate(ev.eps_star, 0.9)
    conf_new = conf_true = torch.zeros(0, dtype=torch.float64)
    if ev.adv_logits is not None and n:
        conf_new, conf_true = M.label_confidences(ev.adv_logits, ev.labels[ev.base_index])
    total = max(int(ev.labels.numel()), 1)
    floor = ev.on_floor
    off_floor = broken & ~floor
    rel = ((ev.eps_star - ev.eps_lower) / ev.eps_star)[off_floor]

    def mean_within(values: Tensor | None) -> float:
        if values is None or not values.numel():
            return math.nan
        kept = values[within].double()
        kept = kept[~torch.isnan(kept)]
        return float(kept.mean()) if kept.numel() else math.nan

    return {
        "num_examples": float(ev.labels.numel()),
        "base_size": float(n),
        "clean_accuracy": n / total,
        "adv_accuracy": (n - int(within.sum())) / total,
        "adv_accuracy_at_search_eps_max": (n - int(broken.sum())) / total,
        "eps_max": ev.eps_max,
        "search_eps_max": ev.search_eps_max,
        "fooling_auc": M.fooling_auc(ev.eps_star, ev.eps_max),
        "fr_at_eps_max": float(M.fooling_rate(ev.eps_star, ev.eps_max)),
        "eps_090": eps090,
        "eps090_reached": float(math.isfinite(eps090)),
        "mean_eps_star": M.mean_eps_within(ev.eps_star, math.inf),
        "mean_eps_star_within_eps090": M.mean_eps_within(ev.eps_star, eps090),
        "eps_star_rtol": ev.rtol if ev.fixed_budget else 0.0,
        "eps_star_resolution": float(rel.max()) if rel.numel() else (0.0 if off_floor.numel() else math.nan),
        "eps_floor": ev.eps_floor,
        "eps_floor_share": float(floor.sum()) / max(int(broken.sum()), 1),
        "snr_db": mean_within(ev.snr_db),
        **{name: mean_within(values) for name, values in quality_scores(ev).items()},
        "median_iterations": M.median(ev.iterations[within]) if ev.iterations is not None else math.nan,
        "median_queries": M.median(ev.queries[within]) if ev.queries is not None else math.nan,
        "mean_total_queries": float(ev.total_queries.double().mean()) if n else math.nan,
        "conf_adv_label": mean_within(conf_new),
        "conf_true_label": mean_within(conf_true),
        "attack_calls": float(ev.attack_calls),
    }


def quality_scores(ev: AttackEvaluation) -> dict[str, Tensor]:
    """The per-clip quality scores ``ev`` has (:data:`evaluation.quality.SCORES`), and ``masked_share``: 1 where the
    perceptual distance is ≤ 0 dB (the perturbation is under the masking threshold everywhere), 0 above, ``nan``
    where it has none."""
    found = {name: getattr(ev, name) for name in SCORES if getattr(ev, name) is not None}
    if "perceptual_db" in found:
        distance = found["perceptual_db"]
        found["masked_share"] = torch.where(torch.isnan(distance), math.nan, (distance <= 0).double())
    return found


_RECORD_TENSORS = {"epsilons": torch.float64, "labels": torch.int64, "clean_pred": torch.int64, "base": torch.bool,
                   "targets": torch.int64, "eps_star": torch.float64, "eps_lower": torch.float64,
                   "sweep_success": torch.int8, "total_queries": torch.int64, "norms": torch.float64,
                   "iterations": torch.int64, "queries": torch.int64, "snr_db": torch.float64,
                   **{name: torch.float64 for name in SCORES}}
_RECORD_SCALARS = ("attack", "domain", "norm", "targeted", "fixed_budget", "eps_max", "search_eps_max", "rtol",
                   "eps_floor", "num_classes", "attack_calls")


def to_record(ev: AttackEvaluation) -> dict[str, object]:
    """The evaluation without its adversarial inputs, as JSON-ready lists (``NaN``/``Infinity`` kept).

    Saved as a run artifact, it lets curves, intervals, pairwise sanity checks and reports be rebuilt
    after a resume without attacking again (:func:`from_record`).
    """
    out: dict[str, object] = {name: getattr(ev, name) for name in _RECORD_SCALARS}
    for name in _RECORD_TENSORS:
        value = getattr(ev, name)
        out[name] = None if value is None else value.tolist()
    out["quality_notes"] = ev.quality_notes
    out["summary"] = dict(ev.summary)
    return out


def from_record(record: dict[str, object]) -> AttackEvaluation:
    """An :class:`AttackEvaluation` (without adversarial inputs and logits) from :func:`to_record`."""
    fields = {name: record[name] for name in _RECORD_SCALARS}
    tensors = {name: None if record.get(name) is None else torch.tensor(record[name], dtype=dtype)
               for name, dtype in _RECORD_TENSORS.items()}
    notes = dict(record.get("quality_notes") or {})
    ev = AttackEvaluation(**fields, **tensors, quality_notes=notes,  # type: ignore[arg-type]
                          summary=dict(record.get("summary") or {}))
    if ev.sweep_success.dim() == 1:  # an empty sweep matrix comes back flat
        ev.sweep_success = ev.sweep_success.view(ev.epsilons.numel(), -1)
    return ev


def epsilon_ratio(defended: AttackEvaluation | dict[str, float],
                  original: AttackEvaluation | dict[str, float]) -> dict[str, float]:
    """ε_r (seed 004 Eq. 15) and the ε₀.₉ ratio from two evaluations or their summaries.

    Both must come from the same attack, representation and architecture; a summary needs the keys
    ``mean_eps_star_within_eps090`` and ``eps_090``. Where ε₀.₉ is ∞ the mean runs over every example
    broken within the search range and ``eps_r_partial`` is 1 (see :func:`evaluation.metrics.epsilon_ratio`).
    A summary read back from MLflow holds ∞ as the largest float64; ``eps090_reached = 0`` restores it.
    """
    d, o = (x.summary if isinstance(x, AttackEvaluation) else x for x in (defended, original))
    try:
        return M.ratio_from_summaries(d["mean_eps_star_within_eps090"], _eps090(d),
                                      o["mean_eps_star_within_eps090"], _eps090(o))
    except KeyError as err:
        raise ValueError(f"summary lacks {err.args[0]!r} needed for eps_r") from None


def _eps090(summary: dict[str, float]) -> float:
    return math.inf if summary.get("eps090_reached", 1.0) == 0 else float(summary["eps_090"])


def victim_device(victim: Victim) -> torch.device:
    """Device of the victim's first parameter or buffer (CPU if it has none)."""
    for t in (*victim.parameters(), *victim.buffers()):
        return t.device
    return torch.device("cpu")


@torch.no_grad()
def _predict(victim: Victim, waves: Tensor, batch_size: int, device: torch.device) -> Tensor:
    was_training = victim.training
    victim.eval()
    try:
        return torch.cat([victim(waves[i:i + batch_size].to(device)).argmax(dim=1).cpu()
                          for i in range(0, waves.shape[0], batch_size)]).long()
    finally:
        victim.train(was_training)


def _start(victim: Victim, attack: Attack, labels: Tensor, clean_pred: Tensor, targets: Tensor | None,
           name: str | None, eps_max: float, search_eps_max: float, rtol: float, eps_floor: float,
           epsilons: Tensor) -> AttackEvaluation:
    base = clean_pred == labels
    n = int(base.sum())
    tgt = None
    if targets is not None:
        tgt = targets.cpu().long()[base]
        if (tgt == labels[base]).any():
            raise ValueError("a target equals the true label of a correctly classified example")
    return AttackEvaluation(
        attack=name or type(attack).__name__, domain=attack.domain, norm=attack.norm, targeted=attack.targeted,
        fixed_budget=attack.fixed_budget, eps_max=eps_max, search_eps_max=search_eps_max, rtol=rtol,
        eps_floor=eps_floor, epsilons=epsilons, num_classes=victim.num_classes,
        labels=labels, clean_pred=clean_pred, base=base, targets=tgt,
        eps_star=torch.full((n,), math.inf, dtype=torch.float64), eps_lower=torch.zeros(n, dtype=torch.float64),
        sweep_success=torch.full((epsilons.numel(), n), -1, dtype=torch.int8),
        total_queries=torch.zeros(n, dtype=torch.int64))


class _Runner:
    """Runs the sweep and the refinement on mini-batches of base-set indices, writing into ``ev``."""

    def __init__(self, victim: Victim, attack: Attack, ev: AttackEvaluation, waves: Tensor,
                 device: torch.device, sweep_chunk: int, n_bisect: int | None) -> None:
        self.victim, self.attack, self.ev, self.waves = victim, attack, ev, waves
        self.device, self.sweep_chunk = device, sweep_chunk
        self.max_steps = MAX_REFINE_STEPS if n_bisect is None else n_bisect

    def run(self, idx: Tensor) -> None:
        if self.attack.fixed_budget:
            self._sweep(idx)
            self._refine(idx)
        else:
            self._min_norm(idx)

    def _call(self, idx: Tensor, epsilons: list[float] | Tensor) -> AttackResult:
        ev = self.ev
        wave = self.waves[idx.to(self.waves.device)].to(self.device)
        targets = ev.targets[idx].to(self.device) if ev.targets is not None else None
        res = self.attack(self.victim, wave, ev.labels[ev.base_index[idx]].to(self.device),
                          targets=targets, epsilons=epsilons)
        ev.attack_calls += 1
        spent = res.queries.sum(dim=0) if self.attack.fixed_budget else res.queries[0]  # one run, every budget
        ev.total_queries[idx] += spent.cpu()
        return res

    def _store(self, idx: Tensor, res: AttackResult, k: Tensor) -> None:
        """Keep, for each example ``idx[j]``, the attack's output at budget index ``k[j]``."""
        ev, cols = self.ev, torch.arange(idx.numel(), device=res.success.device)
        kd = k.to(res.success.device)
        adv = res.adversarial[kd, cols].detach().cpu()
        if ev.adversarial is None:
            n = ev.eps_star.numel()
            ev.adversarial = torch.zeros((n, *adv.shape[1:]), dtype=adv.dtype)
            ev.adv_logits = torch.zeros((n, res.adv_logits.shape[-1]), dtype=torch.float32)
            ev.norms = torch.zeros(n, dtype=torch.float64)
            ev.iterations = torch.zeros(n, dtype=torch.int64)
            ev.queries = torch.zeros(n, dtype=torch.int64)
        ev.adversarial[idx] = adv
        ev.adv_logits[idx] = res.adv_logits[kd, cols].detach().float().cpu()
        ev.norms[idx] = res.norms[kd, cols].detach().double().cpu()
        ev.iterations[idx] = res.iterations[kd, cols].cpu()
        ev.queries[idx] = res.queries[kd, cols].cpu()

    def _min_norm(self, idx: Tensor) -> None:
        ev = self.ev
        res = self._call(idx, ev.epsilons.tolist())
        norm = res.norms[0].detach().double().cpu()
        ok = res.success[-1].cpu()
        ev.sweep_success[:, idx] = res.success.cpu().to(torch.int8)
        ev.eps_star[idx] = torch.where(ok, norm, torch.full_like(norm, math.inf))
        ev.eps_lower[idx] = torch.where(ok, norm, torch.full_like(norm, ev.search_eps_max))
        self._store(idx, res, torch.zeros(idx.numel(), dtype=torch.long))

    def _sweep(self, idx: Tensor) -> None:
        ev, grid = self.ev, self.ev.epsilons
        alive = torch.ones(idx.numel(), dtype=torch.bool)
        for k0 in range(0, grid.numel(), self.sweep_chunk):
            if not alive.any():
                break
            k1 = min(k0 + self.sweep_chunk, grid.numel())
            sub = idx[alive]
            res = self._call(sub, grid[k0:k1].tolist())
            succ = res.success.cpu()
            ev.sweep_success[k0:k1, sub] = succ.to(torch.int8)
            hit = succ.any(dim=0)
            first = succ.to(torch.int8).argmax(dim=0)
            k = torch.where(hit, first, torch.full_like(first, k1 - k0 - 1))
            self._store(sub, res, k)
            kg = k0 + first[hit]
            ev.eps_star[sub[hit]] = grid[kg]
            ev.eps_lower[sub[hit]] = torch.where(kg > 0, grid[(kg - 1).clamp_min(0)], torch.zeros_like(grid[kg]))
            ev.eps_lower[sub[~hit]] = grid[k1 - 1]
            alive[alive.clone()] = ~hit

    def _open(self, idx: Tensor) -> Tensor:
        """The examples of ``idx`` whose bracket is still wider than ``rtol`` and not on the floor."""
        ev = self.ev
        lo, hi = ev.eps_lower[idx], ev.eps_star[idx]
        wide = torch.where(lo > 0, hi - lo > ev.rtol * hi, hi > ev.eps_floor)
        return idx[torch.isfinite(hi) & wide]

    def _refine(self, idx: Tensor) -> None:
        ev = self.ev
        for _ in range(self.max_steps):
            todo = self._open(idx)
            if todo.numel() == 0:
                break
            lo, hi = ev.eps_lower[todo], ev.eps_star[todo]
            mids = torch.where(lo > 0, (lo * hi).sqrt(), (hi / 2).clamp_min(ev.eps_floor))
            if self.attack.per_example_budgets:
                self._probe(todo, mids)
            else:
                for mid in mids.unique():
                    self._probe(todo[mids == mid], mid.view(1))

    def _probe(self, sub: Tensor, mids: Tensor) -> None:
        """Attack the examples ``sub`` at their budgets ``mids`` (one per example, or one shared) and
        narrow their brackets: success lowers ε*, failure raises the lower end."""
        ev = self.ev
        budgets = mids.expand(sub.numel())
        res = self._call(sub, budgets.view(1, -1) if mids.numel() > 1 else [float(mids)])
        hit = res.success[0].cpu()
        keep = torch.zeros(int(hit.sum()), dtype=torch.long)
        self._store(sub[hit], _select(res, hit.to(res.success.device)), keep)
        ev.eps_star[sub[hit]] = budgets[hit]
        ev.eps_lower[sub[~hit]] = budgets[~hit]


def _select(res: AttackResult, mask: Tensor) -> AttackResult:
    """The columns (examples) ``mask`` of a result."""
    return AttackResult(res.adversarial[:, mask], res.clean[mask], res.success[:, mask], res.norms[:, mask],
                        res.iterations[:, mask], res.queries[:, mask], res.adv_logits[:, mask],
                        res.epsilons, res.domain, res.norm)
