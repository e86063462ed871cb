"""The cost plan of the leaderboard study: training every model, and each benchmark's attacks (with their ε*
searches, adaptive draws behind a smoothed model's noise) and certification."""
from __future__ import annotations

from typing import Any

from attacks.base import GRADIENT_FREE
from defense.inference import adaptive_options, is_smoothing
from defense.passes import model_call
from defense.plan import Combo, Item, Plan, attack_from, draws_of, training_cost
from defense.plan_attacks import evaluation_cost
from defense.plan_data import data_sizes
from experiments.leaderboard.config import ModelSpec, load_study
from experiments.plan import study_plan
from leaderboard.threat_model import ThreatModel

LEFT_OUT = ("benchmarks: the clean predictions, the budget's SNR and the bootstrap intervals are not counted (one "
            "forward pass per clip, no model passes); a reference is read from its entry, not attacked again")


def plan(raw: dict[str, Any], overrides: dict[str, Any]) -> Plan:
    """The plan of a leaderboard experiment (file contents ``raw`` and command-line ``overrides``).

    Raises:
        ConfigError: for a bad config, or a data set that is absent and has no documented size.
    """
    study = load_study(raw, overrides)
    dataset = next(iter(study.models.values())).config["dataset"]
    size = data_sizes(dataset)
    items: list[Item] = []
    configs: dict[Combo, dict[str, Any]] = {}
    notes = [LEFT_OUT]
    for model in study.models.values():
        cfg = model.config
        combo = Combo(dataset["name"], cfg["frontend"]["name"], f"{cfg['victim']['backbone']} ({model.backbone})")
        configs.setdefault(combo, cfg)
        passes, exact = training_cost(cfg["defense"], cfg["train"], size)
        items.append(Item(combo, "train", model.name, passes, exact, models=1))
        for tm in study.threat_models.values():
            items += _benchmark_items(combo, model, tm, size.test, size.num_classes, notes)
    out = study_plan(study.name, items, {dataset["name"]: size}, configs)
    out.notes.extend(sorted(set(notes)))
    return out


def _benchmark_items(combo: Combo, model: ModelSpec, tm: ThreatModel, test_size: int, num_classes: int,
                     notes: list[str]) -> list[Item]:
    """One benchmark's attack evaluations (as :func:`leaderboard.benchmark.evaluate_model` runs them) and its
    certification."""
    defense = model.config["defense"]
    ev = tm.eval_config()
    n = min(tm.protocol.n_clips, test_size)
    adaptive = adaptive_options(defense, tm.adaptive()) or {}
    items = []
    for name, cfg in tm.attacks.items():
        attack = attack_from(cfg)
        if adaptive and attack.family not in GRADIENT_FREE:
            cfg = {**cfg, **adaptive}
            attack = attack_from(cfg)
        draws = draws_of(cfg, defense)
        found = evaluation_cost(attack, ev, n, num_classes, draws=draws)
        likely = evaluation_cost(attack, ev, n, num_classes, draws=draws, expected=True)
        if not found.counted:
            notes.append(f"{tm.name}/{name}: attack family not counted (its passes are left out)")
        items.append(Item(combo, "attack", f"{tm.name}/{model.name}/{name}", found.passes, found.exact, runs=1,
                          clips=n, clip_runs=found.clip_runs, expected=likely.passes))
    if is_smoothing(defense) and defense.get("domain", "representation") == tm.domain and tm.norm in ("l2", "linf"):
        draws = tm.protocol.certify_n0 + tm.protocol.certify_n
        items.append(Item(combo, "certify", f"{tm.name}/{model.name}", model_call(n, tm.domain, graph=False) * draws))
    return items
