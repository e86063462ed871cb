"""The cost plan of the Koerich et al. study: per test fold, training the 1D and 2D CNNs, the attacks and the
reconstructions."""
from __future__ import annotations

from typing import Any

from defense.passes import Passes, model_call
from defense.plan import Combo, Item, Plan, training_cost
from defense.plan_data import DataSizes, data_sizes
from experiments.plan import attack_item, study_plan
from experiments.koerich.config import load_study


def plan(raw: dict[str, Any], overrides: dict[str, Any]) -> Plan:
    """The plan of a study experiment (file contents ``raw`` and command-line ``overrides``).

    Raises:
        ConfigError: for a bad config, or a data set that is absent and has no documented size.
    """
    study = load_study(raw, overrides)
    items: list[Item] = []
    configs: dict[Combo, dict[str, Any]] = {}
    sizes: dict[str, DataSizes] = {}
    for fold in study.folds():
        dataset = study.dataset_for(fold)
        key = dataset["name"] if fold is None else f"{dataset['name']} (fold {fold})"
        size = sizes[key] = data_sizes(dataset)
        n = size.test  # every test segment (max_recordings: a subset of them)
        wave_cfg = study.train_config(study.waveform_model, fold)
        wave_combo = Combo(key, wave_cfg["frontend"]["name"], wave_cfg["victim"]["backbone"])
        configs[wave_combo] = wave_cfg
        passes, exact = training_cost(wave_cfg["defense"], wave_cfg["train"], size)
        items.append(Item(wave_combo, "train", "waveform", passes, exact, models=1))
        items.append(Item(wave_combo, "checks", "original", model_call(n, "waveform", graph=False)))
        outputs = 1 + len(study.attacks) + len(study.controls())  # reconstructions the 1D CNN classifies
        items.append(Item(wave_combo, "transfer", "reconstructions",
                          model_call(n, "waveform", graph=False) * (outputs * len(study.spectrogram_models))))
        for name, model in study.spectrogram_models.items():
            cfg = study.train_config(model, fold)
            combo = Combo(key, cfg["frontend"]["name"], f"{cfg['victim']['backbone']} ({name})")
            configs[combo] = cfg
            passes, exact = training_cost(cfg["defense"], cfg["train"], size)
            items.append(Item(combo, "train", name, passes, exact, models=1))
            clean = Passes(fe_forward=n) + model_call(n, "representation", graph=False) * (1 + len(study.controls()))
            items.append(Item(combo, "checks", f"{name}/clean", clean))
            for label, attack_cfg in study.attacks.items():
                items.append(attack_item(combo, f"{name}/{label}", attack_cfg, n, size.num_classes))
    return study_plan(study.name, items, sizes, configs)
