"""The cost plan of the Prinz & Flexer study: training its victim, the clean row, each attack row and its noise
check."""
from __future__ import annotations

from typing import Any

from defense.passes import model_call
from defense.plan import Combo, Item, Plan, training_cost
from defense.plan_data import data_sizes
from experiments.plan import attack_item, study_plan
from experiments.prinz_flexer.config import load_study


def plan(raw: dict[str, Any], overrides: dict[str, Any]) -> Plan:
    """The plan of a study experiment (file contents ``raw`` and command-line ``overrides``).

    Raises:
        ConfigError: for a bad config, or a data set that is absent and has no documented size.
    """
    study = load_study(raw, overrides)
    cfg, ev = study.train_cfg, study.evaluation
    size = data_sizes(cfg["dataset"])
    combo = Combo(cfg["dataset"]["name"], cfg["frontend"]["name"], cfg["victim"]["backbone"])
    n = min(ev.n_examples, size.test)
    passes, exact = training_cost(cfg["defense"], cfg["train"], size)
    items = [Item(combo, "train", "victim", passes, exact, models=1),
             Item(combo, "checks", "clean", model_call(n, "waveform", graph=False))]
    for spec in study.attacks.values():
        per_clip = {"untargeted": 1, "random": 1, "class": 1, "all": size.num_classes - 1}.get(spec.mode)
        attempts = n * (per_clip if per_clip is not None else len(spec.targets))
        attack_cfg = {"name": spec.registry, **spec.kwargs}
        items.append(attack_item(combo, spec.name, attack_cfg, attempts, size.num_classes))
        noise = model_call(attempts, "waveform", graph=False) + model_call(n, "waveform", graph=False)
        items.append(Item(combo, "checks", f"{spec.name}/noise", noise, False))
    return study_plan(study.name, items, {combo.dataset: size}, {combo: cfg})
