"""Cost plans of the studies: the counts of :mod:`defense.plan` for the work a study's ``run`` does, without
training or attacking anything; each study's ``plan`` module counts its own steps with these helpers.

As for a grid, a count that depends on the data is an upper bound: early stopping, an attack's early stop, the
attempts of a targeted mode (clips whose clean prediction is already the target are skipped), the clips a
victim classifies correctly. Studies call each attack once per attempt at its own budget (no ε* search).
"""
from __future__ import annotations

from typing import Any

from defense.passes import Passes, model_call
from defense.plan import Combo, Item, Plan, attack_from
from defense.plan_attacks import run_cost
from defense.plan_data import DataSizes


def attack_item(combo: Combo, label: str, cfg: dict[str, Any], attempts: int, num_classes: int) -> Item:
    """One attack call per attempt at the attack's own budget: the attacked function's passes, the deployed
    prediction, and mapping to the domain."""
    attack = attack_from(cfg)
    to_domain = Passes(fe_forward=1 if attack.domain == "representation" else 0)
    bound, likely = (to_domain + run_cost(attack, num_classes, expected=e).passes
                     + model_call(1, attack.domain, graph=False) for e in (False, True))
    return Item(combo, "attack", label, bound * attempts, False, runs=1, clips=attempts, clip_runs=attempts,
                expected=likely * attempts)


def study_plan(name: str, items: list[Item], sizes: dict[str, DataSizes], configs: dict[Combo, dict[str, Any]]) -> Plan:
    notes = [f"{k}: documented size ({s.note})" for k, s in sizes.items() if s.source == "documented"]
    return Plan(name, items, sizes, configs, {c: int(cfg["train"].get("batch_size", 32)) for c, cfg in configs.items()},
                notes)
