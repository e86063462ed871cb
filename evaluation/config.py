"""The evaluation settings of an experiment: budgets by domain and norm, resolution, intervals."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from victims.registry import ConfigError
from victims.schema import above, at_least, between, check_domains


@dataclass
class EvalConfig:
    """How each attack is evaluated (``evaluation:`` in an experiment file); :func:`evaluation.harness.evaluate`
    takes it whole.

    Budgets belong to a norm and a domain (SPEC "Evaluation"): ``eps_max`` and ``search_eps_max`` map
    ``domain → norm → budget`` (``{representation: {l2: 3.0}}`` is seed 004's ‖ε‖₂ ≤ 3), so an L0 count
    (JSMA) or an L∞ radius never shares an ε_max with L2 attacks. Every attack of a grid needs an
    ``eps_max`` for its own domain and norm; ``search_eps_max`` defaults to it and may not be smaller.
    Each field's domain is declared beside it (:mod:`victims.schema`) and checked when the config is built.

    Attributes:
        n_examples: test clips attacked per model (a fixed, seeded, class-balanced subset, the same clips
            for every model, seed and attack, so original and defended models are compared pairwise).
        eps_max: right end of the fooling AUC, FR(ε_max) and the summary metrics, by domain and norm.
        search_eps_max: largest budget searched for ε*, by domain and norm (default: ``eps_max``); seed 004
            allocates budgets until FR reaches 0.9 "without the condition ‖ε‖₂ ≤ 3" for ε_r, so set it higher.
        n_budgets: size of the geometric budget sweep of fixed-budget attacks.
        eps_rtol: relative resolution ε* is refined to (``(ε* − lower)/ε* ≤ eps_rtol``), logged.
        batch_size: examples per attack call.
        sweep_chunk: budgets per attack call in the sweep.
        seed: seeds example selection, targets and stochastic attacks.
        snr_trim: samples trimmed at each end of a waveform for the SNR (seed 000: 2048).
        quality: score every waveform-domain example with the perceptual distance, PESQ and STOI beside its SNR
            (per clip in the run's record, means with intervals as metrics: :mod:`evaluation.quality`).
        over_the_air: a channel option (``configs/channel/<name>.yaml``, e.g. ``room``) to play every waveform-domain
            attack's examples through (Qin et al. 2019 Sec. 5): the share of ``over_the_air_draws`` channel draws
            each broken example survives and the clean accuracy through the same draws (:mod:`defense.over_the_air`);
            ``null``: none.
        over_the_air_draws: channel draws per clip.
        wavs: adversarial examples per model and attack saved as WAV/plots.
        confusion: draw each attack run's clean and adversarial confusion matrices (``plots/confusion.png``).
        fig1: draw seed 004's Fig. 1 (one clip under every attack) in a grid's report (``plots/fig1_*.png``);
            ``advaudio report`` draws it either way.
        unbounded_eps: budget of the "unbounded attack reaches ~100 %" sanity check (PGD-L2).
        unbounded_steps: iterations of that check.
        monotone_sample: examples attacked at every budget (no cascade) for the "success never falls as
            ε grows" check of fixed-budget attacks; 0 reads the cascade's own, sparser, success matrix.
        n_boot: bootstrap resamples of the evaluation clips for every interval (≥ 1,000 by SPEC).
        confidence: level of every interval.
        certify_n0, certify_n, certify_alpha: randomized smoothing's CERTIFY (Cohen et al. 2019): noise draws
            that pick the class, draws that bound its probability, and the bound's error rate (each certificate
            holds with probability ≥ 1 − α). Cohen et al. use 100, 100,000 and 0.001.
        certify_radii: L2 radii certified accuracy is reported at, by domain (default: ¼, ½ and 1 × the
            domain's L2 ``eps_max``).
        base_set: which clips each attack runs on. ``correct`` (seed 004's base set): those the model classifies
            correctly. ``all``: every clip, its clean prediction standing in for its label (seed 000's rule: an
            attack succeeds when the prediction changes); the dry run (``--dry-run``) uses it, its barely trained
            models classifying few clips correctly.
    """

    n_examples: int = field(default=64, metadata=at_least(1))
    eps_max: dict[str, dict[str, float]] = field(default_factory=lambda: {"representation": {"l2": 3.0}},
                                                 metadata=above(0, each=True))
    search_eps_max: dict[str, dict[str, float]] = field(default_factory=dict, metadata=above(0, each=True))
    n_budgets: int = field(default=8, metadata=at_least(1))
    eps_rtol: float = field(default=0.05, metadata=between(0, 1, "()"))
    batch_size: int = field(default=64, metadata=at_least(1))
    sweep_chunk: int = field(default=2, metadata=at_least(1))
    seed: int = 0
    snr_trim: int = field(default=0, metadata=at_least(0))
    quality: bool = True
    over_the_air: str | None = None
    over_the_air_draws: int = field(default=16, metadata=at_least(1))
    wavs: int = field(default=2, metadata=at_least(0))
    confusion: bool = True
    fig1: bool = True
    unbounded_eps: float = field(default=1000.0, metadata=above(0))
    unbounded_steps: int = field(default=100, metadata=at_least(1))
    monotone_sample: int = field(default=16, metadata=at_least(0))
    n_boot: int = field(default=1000, metadata=at_least(1))
    confidence: float = field(default=0.95, metadata=between(0, 1, "()"))
    certify_n0: int = field(default=100, metadata=at_least(1))
    certify_n: int = field(default=1000, metadata=at_least(1))
    certify_alpha: float = field(default=0.001, metadata=between(0, 0.5, "()"))
    certify_radii: dict[str, list[float]] = field(default_factory=dict, metadata=at_least(0, each=True))
    base_set: Literal["correct", "all"] = "correct"

    def __post_init__(self) -> None:
        check_domains(self, "evaluation")

    def budgets(self, domain: str, norm: str, attack: str = "") -> tuple[float, float]:
        """``(eps_max, search_eps_max)`` of an attack in ``domain`` and ``norm``.

        Raises:
            ConfigError: when no ``eps_max`` is set for them, or the search range is below it.
        """
        who = f" (attack '{attack}')" if attack else ""
        eps = (self.eps_max.get(domain) or {}).get(norm)
        if eps is None:
            raise ConfigError(f"no evaluation.eps_max.{domain}.{norm}{who}: budgets belong to a norm and domain; "
                              f"set evaluation.eps_max.{domain}.{norm}=<budget>")
        search = (self.search_eps_max.get(domain) or {}).get(norm, eps)
        if not 0 < float(eps) <= float(search):
            raise ConfigError(f"evaluation.search_eps_max.{domain}.{norm} = {search} must be >= "
                              f"eps_max {eps} > 0{who}")
        return float(eps), float(search)
