"""Cost plans of the studies (seeds 000, 001, 003): the counts of :mod:`defense.plan` for the work each study's
``run`` does, without training or attacking anything.

As for a grid, a count that depends on the data is an upper bound: early stopping, an attack's early stop, the
attempts of a targeted mode (clips whose clean prediction is already the target are skipped), the clips a
victim classifies correctly. Studies call each attack once per attempt at its own budget (no ε* search).
"""
from __future__ import annotations

from typing import Any

from defense.passes import Passes, model_call
from defense.plan import Combo, Item, Plan, attack_from, training_cost
from defense.plan_attacks import run_cost
from defense.plan_data import DataSizes, data_sizes
from experiments import study_module


def plan_study(raw: dict[str, Any], overrides: dict[str, Any]) -> Plan:
    """The plan of a ``study:`` experiment.

    Raises:
        ConfigError: for a bad study config, or a data set that is absent and has no documented size.
    """
    name = str(raw["study"])
    study_module(name)  # an unknown study is a one-line error
    return {"seed000": _seed000, "seed001": _seed001, "seed003": _seed003}[name](raw, overrides)


def _attack_item(combo: Combo, label: str, cfg: dict[str, Any], attempts: int, num_classes: int) -> Item:
    """One attack call per attempt at the attack's own budget: the attacked function's passes, the deployed
    prediction, and mapping to the domain."""
    attack = attack_from(cfg)
    to_domain = Passes(fe_forward=1 if attack.domain == "representation" else 0)
    bound, likely = (to_domain + run_cost(attack, num_classes, expected=e).passes
                     + model_call(1, attack.domain, graph=False) for e in (False, True))
    return Item(combo, "attack", label, bound * attempts, False, runs=1, clips=attempts, clip_runs=attempts,
                expected=likely * attempts)


def _plan(name: str, items: list[Item], sizes: dict[str, DataSizes], configs: dict[Combo, dict[str, Any]]) -> Plan:
    notes = [f"{k}: documented size ({s.note})" for k, s in sizes.items() if s.source == "documented"]
    return Plan(name, items, sizes, configs, {c: int(cfg["train"].get("batch_size", 32)) for c, cfg in configs.items()},
                notes)


def _seed000(raw: dict[str, Any], overrides: dict[str, Any]) -> Plan:
    from experiments.seed000_config import load_study

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
        items.append(_attack_item(combo, spec.name, attack_cfg, attempts, size.num_classes))
        noise = model_call(attempts, "waveform", graph=False) + model_call(n, "waveform", graph=False)
        items.append(Item(combo, "checks", f"{spec.name}/noise", noise, False))
    return _plan(study.name, items, {combo.dataset: size}, {combo: cfg})


def _seed001(raw: dict[str, Any], overrides: dict[str, Any]) -> Plan:
    from experiments.seed001_config import load_study

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
            items.append(_attack_item(combo, f"{model}/{label}", attack_cfg, attempts, size.num_classes))
            items.append(Item(combo, "checks", f"{model}/{label}", model_call(attempts, "waveform", graph=False) * 2,
                              False))
        for label in study.transfer:  # replayed on this model: the clean clips and every model's examples
            replay = model_call(n, "waveform", graph=False) * (1 + len(study.models))
            items.append(Item(combo, "transfer", f"{model}/{label}", replay, False))
    return _plan(study.name, items, {dataset: size}, configs)


def _seed003(raw: dict[str, Any], overrides: dict[str, Any]) -> Plan:
    from experiments.seed003_config import load_study

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
                items.append(_attack_item(combo, f"{name}/{label}", attack_cfg, n, size.num_classes))
    return _plan(study.name, items, sizes, configs)
