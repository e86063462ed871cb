"""The cost plan (defense/plan*.py): its clip-pass counts against the passes a tiny real grid makes (counted with
module hooks), hand-computed ε* search counts, documented split sizes, and the printed plan. Never a timing."""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any, Callable

import pytest
import torch

import defense.attack_cell as attack_cell
import defense.column as column
import defense.runner as runner
from defense.grid import load_grid
from defense.passes import KINDS, PassCounter, Passes, model_call
from defense.plan import attack_from, plan_grid
from defense.plan_attacks import evaluation_cost, expected_search, run_cost, search_calls, worst_search
from defense.plan_data import DOCUMENTED, data_sizes, documented_sizes
from defense.plan_run import record_outcome
from defense.plan_time import Speeds, estimate, per_clip, timing_optimizer
from evaluation.config import EvalConfig
from evaluation.harness import AttackEvaluation, budget_grid
from evaluation.tracking import iter_runs, setup_tracking, tag
from tests.tiny import trained_victim, tones

TINY = """
name: tinyplan
train: demo
grid:
  dataset: [gm_instruments]
  frontend: [stft_db_small]
  victim: [koerich_cnn2d]
  defense: [none, fgsm_mix_auto]
  attack: [bim_b, cw_l2, noise]
attack_overrides:
  bim_b: {steps: 2}
  cw_l2: {binary_search_steps: 1, max_iterations: 3, abort_early: false}
  noise: {domain: representation, snr_db: null}
evaluation:
  n_examples: 6
  eps_max: {representation: {l2: 3.0}}
  search_eps_max: {representation: {l2: 10000.0}}
  n_budgets: 4
  n_boot: 50
  batch_size: 8
  unbounded_steps: 2
  monotone_sample: 3
  wavs: 1
overrides:
  dataset.classes: [flute, hi_hat]
  dataset.clips_per_class: 12
  dataset.clip_seconds: 0.25
  dataset.sample_rate: 8000
  dataset.split.test_fraction: 0.34
  frontend.n_fft: 128
  frontend.hop: 64
  train.epochs: 3
  train.batch_size: 4
  victim.dense: 32
  train.patience: null
"""
EXACT = ("bim_b", "cw_l2", "noise")
"""Attacks whose search count is exact given the base set and each clip's ε* outcome (no early stop)."""


def test_search_counts_by_hand() -> None:
    """The demo's sweep (5 budgets up to 12, chunks of 2, 5 % resolution): a clip first broken at budget 3 takes
    two sweep calls (4 budgets) and four bisections, factor 2 → 2^(1/16) < 1/0.95; one broken at the smallest
    budget halves ten times to the floor (0.75/1024), or fails on the tenth halving and bisects four more."""
    grid = budget_grid(12.0, 5).tolist()
    assert grid == [0.75, 1.5, 3.0, 6.0, 12.0]
    floor = grid[0] / 1024
    assert search_calls(grid, 2, 0.05, floor, None) == (3, 5)
    assert search_calls(grid, 2, 0.05, floor, 2) == (2 + 4, 4 + 4)
    assert search_calls(grid, 2, 0.05, floor, 4) == (3 + 4, 5 + 4)
    assert search_calls(grid, 2, 0.05, floor, 0) == (1 + 10, 2 + 10)
    assert search_calls(grid, 2, 0.05, floor, 0, fails_at=1) == (1 + 1 + 4, 2 + 1 + 4)
    assert search_calls(grid, 2, 0.05, floor, 0, fails_at=10) == (1 + 14, 2 + 14)
    assert worst_search(grid, 2, 0.05, floor) == (15, 16)
    assert expected_search(grid, 2, 0.05, floor) == (2 + 4, 4 + 4)  # broken at the middle budget, 3


def test_documented_sizes() -> None:
    """ESC-50 in paper_004: fold 1 (400 clips) is the test set, 10 % of the other 1,600 validation, and seed
    004's four pitch shifts plus the original make five copies of the 1,440 training clips; UrbanSound8K's
    fold 10 holds 837 slices."""
    grid = load_grid("paper_004")
    esc = data_sizes(grid.cell_config("esc50", "stft_db", "resnet18", "none")["dataset"])
    assert (esc.train, esc.val, esc.test, esc.num_classes, esc.source) == (1440 * 5, 160, 400, 50, "documented")
    assert esc.num_samples == 16000 * 5
    us8k = data_sizes(grid.cell_config("urbansound8k", "stft_db", "resnet18", "none")["dataset"])
    assert (us8k.test, us8k.val, us8k.num_classes) == (837, round(7895 * 0.1), 10)


@pytest.mark.timeout(300)
def test_documented_fsdd_matches_the_data() -> None:
    """FSDD's documented layout (3,000 recordings, 300 in the official test fold) gives the split sizes the
    real data set has (the FSDD grid's config: 10 % of the 2,700 training recordings for validation)."""
    cfg = load_grid("fsdd").cell_config("fsdd", "stft_db_128", "resnet18", "none")["dataset"]
    if not Path(cfg["root"]).is_dir():
        pytest.skip(f"FSDD is not at {cfg['root']}")
    real = data_sizes(cfg)
    assert real.source == "data"
    assert documented_sizes(cfg, DOCUMENTED["fsdd"], "") == replace(real, source="documented")


def test_per_clip_fit() -> None:
    """A fixed cost per call and a cost per clip through two timed batches: 1 s + 0.1 s per clip, read at 32."""
    assert per_clip(1.2, 1.8, 2, 8, 32) == pytest.approx((1.0 + 0.1 * 32) / 32)
    assert per_clip(1.0, 0.9, 2, 8, 32) == pytest.approx(1.0 / 32)  # noise: no negative cost per clip


@pytest.mark.parametrize("name, kind", [("adam", torch.optim.Adam), ("adamw", torch.optim.AdamW),
                                        ("sgd", torch.optim.SGD), ("adadelta", torch.optim.Adadelta)])
def test_the_timed_training_step_uses_the_runs_optimizer(name: str, kind: type) -> None:
    """The plan times a training step with the optimizer the run will use (the trainer's ``build_optimizer``: fused
    where PyTorch has a fused kernel), at a learning rate that leaves the weights as they are."""
    net = torch.nn.Linear(3, 2)
    opt = timing_optimizer({"optimizer": name, "lr": 0.1, "weight_decay": 1e-4}, net.parameters())
    assert type(opt) is kind and opt.defaults["lr"] == 1e-9 and opt.defaults["weight_decay"] == 1e-4
    assert bool(opt.defaults.get("fused")) == (name != "adadelta")


@pytest.mark.timeout(300)
def test_plan_command_prints_and_runs_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    """``advaudio experiment FILE --plan``: the table (one row per backbone × representation and a total), the
    data sizes read from the data, the estimate; no outputs folder, nothing trained."""
    from defense.cli import main

    monkeypatch.setenv("ADVAUDIO_CACHE", str(tmp_path / "cache"))
    path = tmp_path / "tinyplan.yaml"
    path.write_text(TINY)
    assert main(["experiment", str(path), "--plan", "--outputs", str(tmp_path / "out")]) == 0
    out = capsys.readouterr().out
    assert "# Plan of tinyplan on cpu" in out and "(read from the data)" in out and "Estimated wall time: ~" in out
    rows = [line for line in out.splitlines() if line.startswith(("gm_instruments ", "total "))]
    assert [r.split()[:2] for r in rows] == [["gm_instruments", "stft_db_small"], ["total", "2"]]
    assert not (tmp_path / "out").exists()


@pytest.mark.timeout(120)
def test_counter_counts_deepfool_passes() -> None:
    """DeepFool on the tiny victim: one no-grad forward, then per step one forward with a graph and one backward
    per candidate class (two here: three classes); every clip is broken by its last step or earlier."""
    waves, labels = tones(4, seed=3)
    attack = attack_from({"name": "deepfool", "steps": 3, "candidates": 10, "domain": "representation"})
    victim = trained_victim()
    with PassCounter() as counter:
        counter.watch(victim)
        attack(victim, waves, labels)
    got, n = counter.passes, len(labels)
    bound = evaluation_cost(attack, EvalConfig(), n, 3, base=n).passes - model_call(n, "waveform", graph=False)
    assert (got.train, got.forward, got.fe_forward, got.fe_backward) == (0, 2 * n, n, 0)  # clean and deployed logits
    assert n <= got.grad <= 3 * n and got.backward % 2 == 0 and got.grad - n <= got.backward // 2 <= got.grad
    assert got.fits_in(bound)  # the plan's bound without the harness's clean prediction


@pytest.mark.timeout(120)
@pytest.mark.parametrize("config", [{"name": "cw_perceptual", "max_iterations": 5},
                                    {"name": "pgd_perceptual", "steps": 4, "early_stop": False, "eps": 2.0}],
                         ids=["cw_perceptual", "pgd_perceptual"])
def test_counter_counts_the_perceptual_attacks_passes(config: dict[str, Any]) -> None:
    """The perceptual attacks run every iteration here (C&W always, PGD without early stop): one forward with a
    graph and one backward per iteration and clip, exactly as the plan counts them."""
    waves, labels = tones(2, seed=3)
    attack = attack_from({**config, "domain": "waveform"})
    victim = trained_victim()
    with PassCounter() as counter:
        counter.watch(victim)
        attack(victim, waves, labels)
    got, n = counter.passes, len(labels)
    iterations = config.get("max_iterations", config.get("steps"))
    per_run = run_cost(attack, 3)
    assert per_run.exact and per_run.counted
    assert (got.grad, got.backward) == (iterations * n, iterations * n)
    assert got.grad == per_run.passes.grad * n and got.backward == per_run.passes.backward * n


TINY_ROOM = {"rooms": 2, "band_hz": [50.0, 350.0], "max_seconds": 0.05}  # the tiny victim's 800 Hz


@pytest.mark.timeout(120)
@pytest.mark.parametrize("config", [
    {"name": "pgd_at", "eps": 1.0, "steps": 3}, {"name": "trades", "eps": 1.0, "steps": 3},
    {"name": "mart", "eps": 1.0, "steps": 3}, {"name": "trades", "eps": 0.05, "steps": 3, "domain": "waveform"},
    {"name": "room_augment", "channel": TINY_ROOM}], ids=["pgd_at", "trades", "mart", "trades_wave", "room_augment"])
def test_plan_counts_each_objectives_training_and_robust_validation_passes(config: dict[str, Any]) -> None:
    """One training step and one robust validation of each objective on the tiny victim, counted, equal the
    plan's per-clip passes times the batch."""
    from defense.objectives import OBJECTIVES
    from defense.plan import objective_cost

    waves, labels = tones(2, seed=3)
    objective = OBJECTIVES.create(config["name"], **{k: v for k, v in config.items() if k != "name"})
    per_clip, robust, known = objective_cost(config)
    victim = trained_victim().train()
    with PassCounter() as counter:
        counter.watch(victim)
        objective(victim, waves, labels, lambda loss: loss.backward())
    assert known and counter.passes == per_clip * len(labels)
    victim.eval()
    with PassCounter() as counter:
        counter.watch(victim)
        objective.robust_logits(victim, waves, labels)
    assert robust is not None and counter.passes == robust * len(labels)


def _outcomes(ev: AttackEvaluation, chunk: int) -> list[tuple[int, int]]:
    """``(calls, runs)`` of each clip's ε* search as it went, read from the evaluation's record."""
    grid, floor = ev.epsilons.tolist(), ev.eps_floor
    out = []
    for i in range(ev.eps_star.numel()):
        hits = (ev.sweep_success[:, i] == 1).nonzero().flatten()
        broken = int(hits[0]) if len(hits) else None
        fails = None
        if broken == 0 and float(ev.eps_lower[i]) > 0:  # the halving probe that failed: the first below ε*
            mid = grid[0]
            for j in range(1, 65):
                mid = max(mid / 2, floor)
                if mid < float(ev.eps_star[i]):
                    fails = j
                    break
        out.append(search_calls(grid, chunk, ev.rtol, floor, broken, fails))
    return out


def _wrap(monkeypatch: pytest.MonkeyPatch, module: Any, name: str, phase: Callable[..., str],
          counter: PassCounter, seen: dict[str, Any] | None = None) -> None:
    """Run ``module.<name>`` inside a counter phase named by ``phase(*args, **kwargs)``."""
    original = getattr(module, name)

    def wrapped(*args: Any, **kwargs: Any) -> Any:
        with counter.phase(phase(*args, **kwargs)):
            result = original(*args, **kwargs)
            if seen is not None:
                seen[counter.current] = result
            return result

    monkeypatch.setattr(module, name, wrapped)


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_plan_counts_the_passes_of_a_tiny_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Training counts equal the plan's (no early stopping); each attack's ε* search is at most the plan's bound
    and, for attacks without an early stop, equals the plan's count at the run's own base set and outcomes
    (BIM-b and noise: sweep + bisection; C&W without abort_early: minimum-norm); the rest (the FGSM that
    measures eps: auto, monotonicity sweeps, saved examples, sanity checks, transfer) fits in its bound, and
    nothing runs outside the phases the plan counts."""
    monkeypatch.setenv("ADVAUDIO_CACHE", str(tmp_path / "cache"))
    path = tmp_path / "tinyplan.yaml"
    path.write_text(TINY)
    grid = load_grid(path)
    plan = plan_grid(grid)
    counter = PassCounter()
    evals: dict[str, Any] = {}
    _wrap(monkeypatch, column, "train_from_config", lambda cfg, **kw: f"train/{kw['extra_tags'][tag('defense')]}",
          counter)
    _wrap(monkeypatch, column, "auto_defense_eps", lambda *a, **kw: "auto_eps", counter)
    _wrap(monkeypatch, column, "evaluate_cell",
          lambda g, col, defense, tv, v, option, *a, **kw: f"eval/{defense}/{option}", counter)
    for module in (column, attack_cell):  # the FGSM of eps: auto, and every attack cell's search
        _wrap(monkeypatch, module, "evaluate", lambda *a, **kw: "search", counter, evals)
    _wrap(monkeypatch, column, "sanity_for_model", lambda *a, **kw: "sanity", counter)
    _wrap(monkeypatch, column, "masking_checks", lambda *a, **kw: "sanity", counter)
    _wrap(monkeypatch, runner, "log_grid_transfer", lambda *a, **kw: "transfer", counter)
    with counter:
        runner.run_grid(grid, outputs=tmp_path / "out")
    items = {(i.phase, i.label): i for i in plan.items}
    size = plan.sizes["gm_instruments"]
    n, ev_cfg = min(grid.evaluation.n_examples, size.test), grid.evaluation
    assert counter.by_phase.get("", Passes()) == Passes()  # no pass the plan does not know about
    for defense in ("none", "fgsm_mix_auto"):
        item = items[("train", f"seed0/{defense}")]
        assert item.exact and counter.under(f"train/{defense}") == item.passes
    searched = evals["auto_eps/search"]
    fgsm = attack_from({"name": "fgsm", "domain": "representation", "norm": "l2"})
    assert counter.by_phase["auto_eps/search"] == evaluation_cost(
        fgsm, ev_cfg, searched.labels.numel(), size.num_classes, base=searched.eps_star.numel(),
        per_clip=_outcomes(searched, ev_cfg.sweep_chunk)).passes
    assert counter.under("auto_eps").fits_in(items[("auto_eps", "seed0/fgsm_mix_auto")].passes)
    broken = 0
    for defense in ("none", "fgsm_mix_auto"):
        for option, cfg in grid.attacks.items():
            label, phase = f"seed0/{defense}/{option}", f"eval/{defense}/{option}"
            got, ev = counter.by_phase[f"{phase}/search"], evals[f"{phase}/search"]
            assert got.fits_in(items[("attack", label)].passes), (label, got, items[("attack", label)].passes)
            assert counter.by_phase.get(phase, Passes()).fits_in(items[("checks", label)].passes), label
            attack = attack_from(cfg)
            per_clip = _outcomes(ev, ev_cfg.sweep_chunk) if attack.fixed_budget else None
            exact = evaluation_cost(attack, ev_cfg, n, size.num_classes, base=ev.eps_star.numel(), per_clip=per_clip)
            assert exact.exact == (option in EXACT)
            if option in EXACT:
                assert got == exact.passes, (label, got, exact.passes)
            if attack.fixed_budget:
                broken += int(ev.success.sum())
    assert broken > 0  # a broken clip's search is refined: the bisection was exercised
    assert counter.under("sanity").fits_in(plan.passes("sanity"))
    assert counter.under("transfer").fits_in(plan.passes("transfer"))
    assert counter.passes.fits_in(plan.passes())
    assert plan.passes(expected=True).fits_in(plan.passes())
    speeds = Speeds(*(1e-3 * (i + 1) for i in range(6)), batch=1, device="cpu")
    est = estimate(plan, {combo: speeds for combo in plan.configs})
    record_outcome(grid, est, 12.5, counter.passes)
    run = next(r for r in iter_runs(setup_tracking("tinyplan", None, tmp_path / "out"))
               if r.data.tags.get(tag("kind")) == "grid")
    metrics = run.data.metrics
    assert metrics["measured.wall_s"] == 12.5 and metrics["plan.wall_max_s"] == est.total.total_s
    assert {k: int(metrics[f"measured.passes.{k}"]) for k in KINDS} == counter.passes.as_dict()
    assert metrics["plan.wall_max_s"] == pytest.approx(speeds.seconds(plan.passes()))
