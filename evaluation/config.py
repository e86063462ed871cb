"""The evaluation settings of an experiment: budgets by domain and norm, resolution, intervals."""
from __future__ import annotations

from dataclasses import dataclass, field

from victims.registry import ConfigError


@dataclass
class EvalConfig:
    """How each attack is evaluated (``evaluation:`` in an experiment file); :func:`evaluation.harness.evaluate`
    takes it whole.

    Budgets belong to a norm and a domain (SPEC "Evaluation"): ``eps_max`` and ``search_eps_max`` map
    ``domain → norm → budget`` (``{representation: {l2: 3.0}}`` is seed 004's ‖ε‖₂ ≤ 3), so an L0 count
    (JSMA) or an L∞ radius never shares an ε_max with L2 attacks. Every attack of a grid needs an
    ``eps_max`` for its own domain and norm; ``search_eps_max`` defaults to it and may not be smaller.

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
        wavs: adversarial examples per model and attack saved as WAV/plots.
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
    """

    n_examples: int = 64
    eps_max: dict[str, dict[str, float]] = field(default_factory=lambda: {"representation": {"l2": 3.0}})
    search_eps_max: dict[str, dict[str, float]] = field(default_factory=dict)
    n_budgets: int = 8
    eps_rtol: float = 0.05
    batch_size: int = 64
    sweep_chunk: int = 2
    seed: int = 0
    snr_trim: int = 0
    wavs: int = 2
    unbounded_eps: float = 1000.0
    unbounded_steps: int = 100
    monotone_sample: int = 16
    n_boot: int = 1000
    confidence: float = 0.95
    certify_n0: int = 100
    certify_n: int = 1000
    certify_alpha: float = 0.001
    certify_radii: dict[str, list[float]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not (0 < self.certify_n0 and 0 < self.certify_n and 0 < self.certify_alpha < 0.5):
            raise ConfigError(f"evaluation.certify_n0 and certify_n must be > 0 and certify_alpha in (0, 0.5), got "
                              f"{self.certify_n0}, {self.certify_n}, {self.certify_alpha}")

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
