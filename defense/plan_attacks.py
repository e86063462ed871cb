"""What attacks and the evaluation harness cost, in clip-passes (:mod:`defense.passes`): pure counting.

Per clip, one *run* of an attack (one budget) costs its iterations' passes; the harness
(:func:`evaluation.harness.evaluate`) makes, for each clip, a number of attack *calls* (each maps the clip to
the attack's domain once) holding a number of runs (each also reads the deployed model's prediction once).
A minimum-norm attack makes one call of one run; a fixed-budget attack's ε* search makes the sweep's calls and
one call per refinement step (:func:`search_calls`). Where a count depends on the data — an attack that stops
at its first success, where a clip's ε* falls, how many clips the victim classifies correctly — the plan is the
upper bound (every loop at its cap, every clip in the base set, the deepest search); a count that does not
(BIM-b, PGD and C&W without ``abort_early`` at a given base set, an ε* search at a given outcome) is exact.
Beside the bound the plan states an expectation (``expected=True``): loops that stop early run
:data:`EXPECTED_SHARE` of their cap, L-BFGS's line search accepts its first step, and each clip's ε* falls at
the sweep's middle budget (:func:`expected_search`).
"""
from __future__ import annotations

import inspect
import itertools
import math
from dataclasses import dataclass

from attacks.apgd import APGD
from attacks.base import Attack
from attacks.cw import CarliniWagnerL2, _SignAdamCW
from attacks.deepfool import DeepFool
from attacks.fmn import FMN
from attacks.gradient import GradientAttack
from attacks.jsma import JSMA
from attacks.lbfgs import LBFGSAttack, batched_lbfgs
from attacks.nes import NES
from attacks.noise import WhiteNoise
from attacks.perceptual import PerceptualPGD
from attacks.perceptual_cw import PerceptualCW
from attacks.square import Square
from defense.passes import Passes, model_call, total
from evaluation.config import EvalConfig
from evaluation.harness import MAX_REFINE_STEPS, budget_grid

LBFGS_BACKTRACKS = inspect.signature(batched_lbfgs).parameters["max_backtracks"].default
EXPECTED_SHARE = 0.5
"""The plan's expectation of a loop that stops at a clip's first success (or when its loss stalls): half its
cap. A stated assumption, not a measurement: the run logs its measured time and passes beside the plan."""


@dataclass(frozen=True)
class RunCost:
    """One run of an attack on one clip: its passes at most, and whether that count is exact."""

    passes: Passes
    exact: bool
    counted: bool = True


def run_cost(attack: Attack, num_classes: int, draws: int = 1, expected: bool = False) -> RunCost:
    """The passes of one run of ``attack`` on one clip (``draws``: EoT draws per call of the attacked function,
    1 unless it attacks a random transform adaptively): at most, or with ``expected`` the plan's expectation
    (a loop that stops early runs :data:`EXPECTED_SHARE` of its cap; L-BFGS's line search accepts its first step).

    An attack family the plan does not know (the ART adapter) costs nothing here and is marked
    ``counted=False``.
    """
    d = attack.domain

    def step(backward: int) -> Passes:
        return model_call(1, d, graph=True, backward=backward, draws=draws)

    def cap(iterations: int) -> int:
        return max(1, math.ceil(iterations * EXPECTED_SHARE)) if expected else iterations

    plain = model_call(1, d, graph=False, draws=draws)
    if isinstance(attack, GradientAttack):
        steps = cap(attack.steps) if attack.early_stop else attack.steps
        return RunCost(step(1) * steps, exact=not attack.early_stop)
    if isinstance(attack, DeepFool):
        k = 1 if attack.targeted else min(attack.candidates, num_classes - 1)
        return RunCost(plain + step(k) * cap(attack.steps), exact=False)
    if isinstance(attack, CarliniWagnerL2):
        iterations = attack.binary_search_steps * attack.max_iterations
        return RunCost(step(1) * (cap(iterations) if attack.abort_early else iterations), exact=not attack.abort_early)
    if isinstance(attack, _SignAdamCW):
        return RunCost(step(1) * cap(attack.max_iterations) + step(0), exact=False)
    if isinstance(attack, NES):  # its queries are the attacked function's forwards, capped per clip
        per_iteration = attack.n_samples + 1 + int(getattr(attack, "search", False))  # a search checks its radius
        queries = min(attack.max_queries, 1 + attack.max_iterations * per_iteration)
        return RunCost(model_call(1, d, graph=False) * cap(queries), exact=False)
    if isinstance(attack, JSMA):
        return RunCost((Passes() if attack.targeted else plain) + step(2) * cap(attack.steps), exact=False)
    if isinstance(attack, LBFGSAttack):
        evaluations = 1 if expected else LBFGS_BACKTRACKS
        per_search = step(1) * (1 + cap(attack.max_iterations) * evaluations) + plain
        return RunCost(per_search * attack.binary_search_steps, exact=False)
    if isinstance(attack, APGD):  # per restart: the start's evaluation and one per step
        if attack.restarts == 1 and not attack.early_stop:
            return RunCost(step(1) * (1 + attack.steps), exact=True)
        return RunCost(step(1) * (cap(attack.restarts * (1 + attack.steps))), exact=False)
    if isinstance(attack, FMN):
        return RunCost(step(1) * attack.steps, exact=True)
    if isinstance(attack, Square):  # queries of the attacked function, capped per clip
        return RunCost(model_call(1, d, graph=False) * cap(attack.max_queries), exact=False)
    if isinstance(attack, PerceptualPGD):
        steps = cap(attack.steps) if attack.early_stop else attack.steps
        return RunCost(step(1) * steps, exact=not attack.early_stop)
    if isinstance(attack, PerceptualCW):  # every iteration runs: it keeps shrinking the smallest example
        return RunCost(step(1) * attack.max_iterations, exact=True)
    if isinstance(attack, WhiteNoise):
        return RunCost(Passes(), exact=True)
    return RunCost(Passes(), exact=False, counted=False)


def _probe(lo: float, hi: float, rtol: float, floor: float) -> bool:
    """The harness's refinement test: the bracket ``(lo, hi]`` is still open."""
    return math.isfinite(hi) and (hi - lo > rtol * hi if lo > 0 else hi > floor)


def refine_steps(lo: float, hi: float, rtol: float, floor: float, fails_at: int | None = None) -> int:
    """Refinement probes of one clip whose sweep left the bracket ``(lo, hi]`` (the harness's ``_refine``).

    Bisection at the geometric midpoint narrows the bracket by the same ratio whichever way a probe goes, so
    its step count is fixed; below the grid (``lo = 0``) the budget is halved until a probe fails
    (``fails_at``: the 1-based halving probe that fails, ``None``: none before the floor), then bisected.
    """
    steps, halving = 0, 0
    while steps < MAX_REFINE_STEPS and _probe(lo, hi, rtol, floor):
        if lo > 0:
            hi = math.sqrt(lo * hi)  # the narrowing does not depend on the outcome
        else:
            halving += 1
            mid = max(hi / 2, floor)
            lo, hi = (mid, hi) if halving == fails_at else (0.0, mid)
        steps += 1
    return steps


def search_calls(grid: list[float], chunk: int, rtol: float, floor: float, broken_at: int | None,
                 fails_at: int | None = None) -> tuple[int, int]:
    """``(calls, runs)`` of one clip's ε* search (:mod:`evaluation.harness`): first broken at sweep index
    ``broken_at`` (``None``: never within the search range), and, when broken at the smallest budget, with
    the halving probe ``fails_at`` failing (see :func:`refine_steps`)."""
    k = len(grid)
    chunks = [(start, min(start + chunk, k)) for start in range(0, k, chunk)]
    calls = runs = 0
    for start, end in chunks:
        calls, runs = calls + 1, runs + end - start
        if broken_at is not None and start <= broken_at < end:
            break
    if broken_at is None:
        return calls, runs
    lo = grid[broken_at - 1] if broken_at > 0 else 0.0
    steps = refine_steps(lo, grid[broken_at], rtol, floor, fails_at if broken_at == 0 else None)
    return calls + steps, runs + steps


def worst_search(grid: list[float], chunk: int, rtol: float, floor: float) -> tuple[int, int]:
    """The most calls and the most runs any clip's ε* search can take (each maximised on its own)."""
    halvings = refine_steps(0.0, grid[0], rtol, floor)  # never failing: halve down to the floor
    outcomes = [search_calls(grid, chunk, rtol, floor, b, f)
                for b, f in itertools.chain([(None, None)], ((b, None) for b in range(len(grid))),
                                            ((0, f) for f in range(1, halvings + 1)))]
    return max(c for c, _ in outcomes), max(r for _, r in outcomes)


@dataclass(frozen=True)
class EvaluationCost:
    """One harness evaluation: its passes, the attack runs summed over clips, whether it is exact."""

    passes: Passes
    clip_runs: int
    exact: bool
    counted: bool = True


def expected_search(grid: list[float], chunk: int, rtol: float, floor: float) -> tuple[int, int]:
    """The plan's expectation of one clip's ε* search: broken at the sweep's middle budget, then bisected."""
    return search_calls(grid, chunk, rtol, floor, len(grid) // 2)


def evaluation_cost(attack: Attack, ev_cfg: EvalConfig, clips: int, num_classes: int, *, base: int | None = None,
                    draws: int = 1, per_clip: list[tuple[int, int]] | None = None,
                    expected: bool = False) -> EvaluationCost:
    """The passes of :func:`evaluation.harness.evaluate` of ``attack`` on ``clips`` clips.

    Args:
        base: clips the victim classifies correctly (default: all of them, the bound).
        draws: EoT draws of the attacked function (adaptive attack on a random transform).
        per_clip: ``(calls, runs)`` of each base clip's ε* search (default: :func:`worst_search` for each, or
            :func:`expected_search` with ``expected``); ignored for a minimum-norm attack.
        expected: the plan's expectation instead of the bound (:func:`run_cost`, :func:`expected_search`).
    """
    n = clips if base is None else base
    cost = run_cost(attack, num_classes, draws, expected)
    to_domain = Passes(fe_forward=1) if attack.domain == "representation" else Passes()
    deployed = model_call(1, attack.domain, graph=False)
    predict = model_call(clips, "waveform", graph=False)
    if not attack.fixed_budget:
        per_clip = [(1, 1)] * n
        exact = cost.exact
    elif per_clip is None:
        grid = budget_grid(ev_cfg.budgets(attack.domain, attack.norm)[1], ev_cfg.n_budgets).tolist()
        search = expected_search if expected else worst_search
        per_clip = [search(grid, ev_cfg.sweep_chunk, ev_cfg.eps_rtol, grid[0] / 1024)] * n
        exact = False
    else:
        exact = cost.exact
    passes = predict + total(to_domain * c + (deployed + cost.passes) * r for c, r in per_clip)
    return EvaluationCost(passes, sum(r for _, r in per_clip), exact, cost.counted)
