"""A plan's wall time: a short calibration of each backbone × representation on the training device, times the
clip-passes the plan counts (:mod:`defense.plan`), printed as a table and logged beside a run's measured time.

Calibration builds each victim from its config as training does (random weights) at the real input size (the
data set's rate × clip length through the real front-end) and times, after one warm-up, each kind of pass
(:mod:`defense.passes`) on two small batches (:data:`PROBE_CLIPS` clips, then twice to four times as many: four
times where a pass stays within :data:`CALIBRATION_SECONDS`; none for a model whose passes take many seconds,
:data:`HEAVY`); a line through the two (a fixed cost per call and a cost per
clip, :func:`per_clip`) gives the seconds per clip in a batch of the training batch size. A small batch costs
more per clip than a large one, on a busy machine many times more, so timing it alone would err long. Training
passes include the optimiser step and, on CUDA with ``train.amp``, bfloat16 autocast. What no pass covers — data loading, MLflow logging, bootstrap intervals,
plots — is left out of the estimate.
"""
from __future__ import annotations

import contextlib
import json
import logging
import time
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Callable, Iterator

import torch
import torch.nn.functional as F

from defense.passes import KINDS, Passes
from defense.plan import Combo, Plan
from defense.plan_attacks import EXPECTED_SHARE
from training.trainer import TrainConfig, build_optimizer, resolve_device
from victims.registry import to_dataclass
from victims.victim import Victim, build_victim

log = logging.getLogger(__name__)
CALIBRATION_SECONDS = 2.0
"""Longest one pass (of the slowest kind) of the second calibration batch may take, unless it holds only twice
the first batch's clips."""
REPEATS = 3
"""Timed calls per kind of pass (after a warm-up); the fastest counts."""
HEAVY = 10
"""A first calibration batch whose slowest pass takes over ``HEAVY`` × :data:`CALIBRATION_SECONDS` is taken per clip
as it is: at that size the fixed cost per call is negligible, and a second batch would cost minutes."""
PROBE_CLIPS = 2
"""Clips of the first calibration batch, which sizes the second (at most four times as many)."""


@dataclass(frozen=True)
class Speeds:
    """Seconds per clip-pass of each kind in a batch of ``batch`` clips on ``device``."""

    train: float
    grad: float
    backward: float
    forward: float
    fe_forward: float
    fe_backward: float
    batch: int
    device: str

    def seconds(self, passes: Passes) -> float:
        return sum(getattr(self, kind) * getattr(passes, kind) for kind in KINDS)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(fn: Callable[[], Any], device: torch.device, repeats: int = REPEATS) -> float:
    """Seconds of one ``fn()``: the fastest of up to ``repeats`` calls after a warm-up call, fewer when one call
    takes over a second (the minimum is the estimate least disturbed by other work, as ``timeit`` advises); a
    warm-up call over :data:`CALIBRATION_SECONDS` is the only one (its one-time costs are small beside it)."""
    _sync(device)
    start = time.perf_counter()
    fn()
    _sync(device)
    best = time.perf_counter() - start
    if best > CALIBRATION_SECONDS:
        return best
    for _ in range(repeats):
        _sync(device)
        start = time.perf_counter()
        fn()
        _sync(device)
        best = min(best, time.perf_counter() - start)
        if best > 1.0:
            break
    return best


def timing_optimizer(train: dict[str, Any], params: Any) -> torch.optim.Optimizer:
    """The optimizer a training config's run steps with (:func:`training.trainer.build_optimizer`), at a learning
    rate of 1e-9 so the timed steps leave the weights as they are: its step costs what the run's does (Adadelta has
    no fused kernel, and on one CPU thread the fused ones step VGG-16 4-12x faster than the default loop)."""
    cfg = to_dataclass(TrainConfig, dict(train), "train")
    return build_optimizer(replace(cfg, lr=1e-9), params)


def _pass_times(victim: Victim, wave: torch.Tensor, device: torch.device, amp: bool,
                opt: torch.optim.Optimizer) -> dict[str, float]:
    """Seconds of the timed passes on the batch ``wave``: the front-end's forward (``fe_forward``) and forward with
    backward (``fe_both``), the backbone's forward (``forward``) and training step with ``opt`` (``train``)."""
    labels = torch.zeros(wave.shape[0], dtype=torch.long, device=device)
    with torch.no_grad():
        rep = victim.represent(wave)
    victim.eval()
    out: dict[str, float] = {}
    with torch.no_grad():
        out["fe_forward"] = _timed(lambda: victim.frontend(wave), device)
        out["forward"] = _timed(lambda: victim.classify(rep), device)
    w = wave.clone().requires_grad_(True)
    out["fe_both"] = _timed(lambda: torch.autograd.grad(victim.frontend(w).sum(), w), device)
    victim.train()
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if amp and device.type == "cuda" \
        else contextlib.nullcontext()

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        with autocast:
            loss = F.cross_entropy(victim.classify(rep), labels)
        loss.backward()
        opt.step()

    out["train"] = _timed(step, device)
    victim.eval()
    return out


def speeds_from(timed: dict[str, float], batch: int, device: str) -> Speeds:
    """:class:`Speeds` from seconds per clip of the timed passes (:func:`_pass_times`). An attack's gradient pass
    (a forward that builds a graph and a backward to the input) is taken as a training step's forward and
    backward (``grad`` = ``forward``, ``backward`` = ``train`` − ``forward``): one backward pass through the same
    layers, to the input instead of the weights."""
    return Speeds(train=timed["train"], grad=timed["forward"], backward=max(timed["train"] - timed["forward"], 0.0),
                  forward=timed["forward"], fe_forward=timed["fe_forward"],
                  fe_backward=max(timed["fe_both"] - timed["fe_forward"], 0.0), batch=batch, device=device)


def calibrate(cfg: dict[str, Any], num_classes: int, sample_rate: int, num_samples: int, batch: int,
              budget_s: float = CALIBRATION_SECONDS) -> Speeds:
    """Seconds per clip-pass of the victim of a training config (``frontend``, ``victim``, ``train``) at the real
    input size, on its ``train.device`` (see the module docstring)."""
    device = resolve_device(str(cfg["train"].get("device", "auto")))
    amp = bool(cfg["train"].get("amp", True))
    torch.manual_seed(0)
    victim = build_victim(cfg["frontend"], cfg["victim"], [str(c) for c in range(num_classes)], sample_rate,
                          num_samples).to(device)
    gen = torch.Generator().manual_seed(0)
    opt = timing_optimizer(cfg["train"], victim.parameters())

    def times(clips: int) -> dict[str, float]:
        return _pass_times(victim, 0.1 * torch.randn(clips, 1, num_samples, generator=gen).to(device), device, amp,
                           opt)

    small = min(batch, PROBE_CLIPS)
    first = times(small)
    slowest = max(max(first.values()), 1e-9)
    fits = int(budget_s * small / slowest)  # clips a pass of the slowest kind fits in the budget
    large = min(batch, PROBE_CLIPS * 4, max(2 * small, fits))
    if slowest > HEAVY * budget_s or large <= small:  # heavy: the cost per clip dominates, no second batch
        return speeds_from({k: v / small for k, v in first.items()}, small, str(device))
    second = times(large)
    return speeds_from({k: per_clip(first[k], second[k], small, large, batch) for k in first}, batch, str(device))


def per_clip(t_small: float, t_large: float, small: int, large: int, batch: int) -> float:
    """Seconds per clip in a batch of ``batch`` from two timed batches, fitting ``t(b) = a + c·b``: a fixed cost per
    call (framework overhead, waiting for a busy machine) and a cost per clip; both kept non-negative."""
    c = max((t_large - t_small) / (large - small), 0.0)
    a = max(t_small - c * small, 0.0)
    return (a + c * batch) / batch


def calibrate_plan(plan: Plan, budget_s: float = CALIBRATION_SECONDS) -> dict[Combo, Speeds]:
    """:func:`calibrate` for each combo of ``plan`` (once per distinct configuration and input size)."""
    found: dict[str, Speeds] = {}
    out = {}
    for combo, cfg in plan.configs.items():
        size = plan.sizes[combo.dataset]
        key = json.dumps([cfg["frontend"], cfg["victim"], cfg["train"].get("device"), cfg["train"].get("optimizer"),
                          size.num_classes, size.sample_rate, size.num_samples], sort_keys=True, default=str)
        if key not in found:
            found[key] = calibrate(cfg, size.num_classes, size.sample_rate, size.num_samples,
                                   plan.batch_sizes[combo], budget_s)
            log.info("calibrated %s/%s/%s: %s", *asdict(combo).values(), found[key])
        out[combo] = found[key]
    return out


@dataclass
class Row:
    """One line of the plan's table."""

    combo: Combo
    models: int = 0
    runs: int = 0
    clips: int = 0
    clip_runs: int = 0
    passes: Passes = field(default_factory=Passes)
    train_s: float = 0.0
    eval_s: float = 0.0
    eval_likely_s: float = 0.0

    @property
    def total_s(self) -> float:
        """At most."""
        return self.train_s + self.eval_s

    @property
    def likely_s(self) -> float:
        """Expected."""
        return self.train_s + self.eval_likely_s


@dataclass
class Estimate:
    """A plan with its times: per combo rows and the total, in seconds."""

    plan: Plan
    speeds: dict[Combo, Speeds]
    rows: list[Row]

    @property
    def total(self) -> Row:
        out = Row(Combo("total", "", ""))
        for r in self.rows:
            out.models, out.runs, out.clips = out.models + r.models, out.runs + r.runs, out.clips + r.clips
            out.clip_runs, out.passes = out.clip_runs + r.clip_runs, out.passes + r.passes
            out.train_s, out.eval_s = out.train_s + r.train_s, out.eval_s + r.eval_s
            out.eval_likely_s += r.eval_likely_s
        return out


def estimate(plan: Plan, speeds: dict[Combo, Speeds]) -> Estimate:
    """Per-combo counts and seconds of ``plan`` with the calibrated ``speeds``."""
    rows: dict[Combo, Row] = {}
    for item in plan.items:
        row = rows.setdefault(item.combo, Row(item.combo))
        row.models += item.models
        row.runs += item.runs
        row.clips += item.clips
        row.clip_runs += item.clip_runs
        row.passes = row.passes + item.passes
        seconds = speeds[item.combo].seconds(item.passes)
        if item.phase == "train":
            row.train_s += seconds
        else:
            row.eval_s += seconds
            row.eval_likely_s += speeds[item.combo].seconds(item.likely)
    return Estimate(plan, speeds, list(rows.values()))


def hours(seconds: float) -> str:
    """``12.3 h``, ``45 min`` or ``30 s``."""
    if seconds >= 3600:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 60:.0f} min" if seconds >= 60 else f"{seconds:.0f} s"


def format_plan(est: Estimate) -> str:
    """The plan as text: data sizes, the per-combo table with its total, and what the numbers mean."""
    plan = est.plan
    devices = sorted({s.device for s in est.speeds.values()})
    batches = sorted({s.batch for s in est.speeds.values()})
    lines = [f"# Plan of {plan.name} on {', '.join(devices)} (passes timed per clip in batches of "
             f"{', '.join(map(str, batches))}; nothing is trained or attacked)", ""]
    for name, size in plan.sizes.items():
        lines.append(f"{name}: train {size.train}, val {size.val}, test {size.test} clips, {size.num_classes} "
                     f"classes, {size.num_samples} samples at {size.sample_rate} Hz"
                     + (" (documented size, not read)" if size.source == "documented" else " (read from the data)"))
    head = ("dataset", "representation", "backbone", "models", "attack runs", "clip attacks", "clip runs <=",
            "passes <= (M)", "train", "evaluation ~", "evaluation <=", "total ~", "total <=")
    body = [(r.combo.dataset, r.combo.frontend, r.combo.victim, str(r.models), str(r.runs), str(r.clips),
             str(r.clip_runs), f"{r.passes.backbone / 1e6:.3g}", hours(r.train_s), hours(r.eval_likely_s),
             hours(r.eval_s), hours(r.likely_s), hours(r.total_s)) for r in [*est.rows, est.total]]
    widths = [max(len(row[i]) for row in (head, *body)) for i in range(len(head))]
    fmt = "  ".join(f"{{:{'<' if i < 3 else '>'}{w}}}" for i, w in enumerate(widths))
    lines += ["", fmt.format(*head), *(fmt.format(*row) for row in body), ""]
    total = est.total
    lines.append(f"Estimated wall time: ~{hours(total.likely_s)}, at most {hours(total.total_s)} (training "
                 f"{hours(total.train_s)}; evaluation ~{hours(total.eval_likely_s)}, at most {hours(total.eval_s)}).")
    lines.append("Passes: clips through the backbone (training, attack and evaluation forwards). Training counts are "
                 "exact without early stopping (train.patience: null), else an upper bound. '<=' is the upper bound "
                 "of the attacks: every clip in the base set, every loop that stops early at its cap, every ε* "
                 "search at its deepest (the sweep plus the bisection to eps_rtol, or the halving to the floor). "
                 f"'~' is the plan's expectation: loops that stop early run {EXPECTED_SHARE:g} of their cap, L-BFGS "
                 "accepts its first line-search step, each ε* falls at the sweep's middle budget (an assumption, "
                 "not a measurement; a run logs its measured time beside it). Clip attacks = evaluations × clips; "
                 "clip runs = attack runs at one budget summed over clips. Not estimated: data loading, logging, "
                 "intervals and plots.")
    lines += [f"Note: {n}" for n in plan.notes]
    return "\n".join(lines)


def plan_record(est: Estimate) -> dict[str, Any]:
    """The plan as JSON-ready data (``plan.json`` on the grid's run)."""
    total = est.total
    return {"name": est.plan.name, "wall_s": total.likely_s, "wall_max_s": total.total_s, "train_s": total.train_s,
            "eval_s": total.eval_likely_s, "eval_max_s": total.eval_s, "passes_max": total.passes.as_dict(),
            "passes": est.plan.passes(expected=True).as_dict(), "notes": est.plan.notes,
            "sizes": {k: asdict(v) for k, v in est.plan.sizes.items()},
            "rows": [{**asdict(r.combo), "models": r.models, "attack_runs": r.runs, "clip_attacks": r.clips,
                      "clip_runs": r.clip_runs, "passes_max": r.passes.as_dict(), "train_s": r.train_s,
                      "eval_s": r.eval_likely_s, "eval_max_s": r.eval_s} for r in est.rows],
            "speeds": {f"{c.dataset}/{c.frontend}/{c.victim}": asdict(s) for c, s in est.speeds.items()}}


def log_outcome(run_id: str, est: Estimate, wall_s: float, measured: Passes | None) -> None:
    """Log the plan beside what the run measured on the grid's MLflow run: ``plan.json``, metrics ``plan.wall_s``
    (expected), ``plan.wall_max_s``, ``plan.train_s``, ``plan.eval_s``, ``plan.passes.<kind>`` (expected) and
    ``plan.passes_max.<kind>``, ``measured.wall_s``, ``measured.passes.<kind>`` (when counted) and
    ``measured.wall_ratio`` (measured ÷ expected wall time), at one step per command (a rerun, or a second command
    on the same grid, adds its own)."""
    import mlflow

    from evaluation.tracking import log_next, reopened_run

    record = plan_record(est)
    metrics = {**{f"plan.{k}": record[k] for k in ("wall_s", "wall_max_s", "train_s", "eval_s", "eval_max_s")},
               **{f"plan.passes.{k}": float(v) for k, v in record["passes"].items()},
               **{f"plan.passes_max.{k}": float(v) for k, v in record["passes_max"].items()},
               "measured.wall_s": wall_s, "measured.wall_ratio": wall_s / max(record["wall_s"], 1e-9)}
    if measured is not None:
        metrics.update({f"measured.passes.{k}": float(v) for k, v in measured.as_dict().items()})
        record["measured_passes"] = measured.as_dict()
    record["measured_wall_s"] = wall_s
    with reopened_run(run_id):
        log_next(run_id, metrics, "measured.wall_s")
        mlflow.log_dict(record, "plan.json")


@contextlib.contextmanager
def measuring(counting: bool) -> Iterator[Callable[[], tuple[float, Passes | None]]]:
    """Time the block and, when ``counting``, count its clip-passes (:class:`defense.passes.PassCounter`); yields a
    function returning ``(seconds so far, passes or None)``."""
    from defense.passes import PassCounter

    counter = PassCounter() if counting else None
    start = time.perf_counter()
    with counter if counter is not None else contextlib.nullcontext():
        yield lambda: (time.perf_counter() - start, counter.passes if counter is not None else None)
