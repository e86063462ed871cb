"""The cost plan of the Subramanian et al. study: training each model, each attack on each, the transfer replays."""
from __future__ import annotations

from typing import Any

from defense.passes import model_call
from defense.plan import Combo, Item, Plan, training_cost
from defense.plan_data import data_sizes
from experiments.plan import attack_item, study_plan
from experiments.subramanian.config import load_study


def plan(raw: dict[str, Any], overrides: dict[str, Any]) -> Plan:
    """The plan of a study experiment (file contents ``raw`` and command-line ``overrides``).

    Raises:
        ConfigError: for a bad config, or a data set that is absent and has no documented size.
    """
    study = load_study(raw, overrides)
    ev = study.evaluation
    first = next(iter(study.models.values()))
    size = data_sizes(first["dataset"])
    dataset = first["dataset"]["name"]
    n = min(ev.n_examples, size.test)
    classes = len(study.targeted_classes)
    aimed = ev.targeted_per_class * classes * (classes - 1)
    items: list[Item] = []
    configs: dict[Combo, dict[str, Any]] = {}
    for model, cfg in study.models.items():
        combo = Combo(dataset, cfg["frontend"]["name"], f"{cfg['victim']['backbone']} ({model})")
        configs[combo] = cfg
        passes, exact = training_cost(cfg["defense"], cfg["train"], size)
        items.append(Item(combo, "train", model, passes, exact, models=1))
        for label, attack_cfg in study.attacks.items():
            attempts = aimed if study.targeted[label] else n
            items.append(attack_item(combo, f"{model}/{label}", attack_cfg, attempts, size.num_classes))
            items.append(Item(combo, "checks", f"{model}/{label}", model_call(attempts, "waveform", graph=False) * 2,
                              False))
        for label in study.transfer:  # replayed on this model: the clean clips and every model's examples
            replay = model_call(n, "waveform", graph=False) * (1 + len(study.models))
            items.append(Item(combo, "transfer", f"{model}/{label}", replay, False))
    return study_plan(study.name, items, {dataset: size}, configs)
