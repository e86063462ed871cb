"""The dry runs of the studies (seeds 000, 001, 003; :mod:`defense.dryrun`): each study's models, the overrides that
make its real ``run`` dry (:mod:`defense.dryrun_shrink`), and the check that every step left its runs.

A study is run once, by its own ``run`` and ``report``, with its command-line overrides plus the dry ones: the
data set's stand-in (root, short clips), one training epoch, each model's front-end and each attack row shrunk, the
evaluation's clip counts and resamples lowered. The check reads the throw-away store: a training run per model (per
test fold for seed 003), every attack row's run with at least one attempt (seed 000; seed 001: on each model, every
clip attacked), seed 001's transfer runs, seed 003's evaluation runs per fold and input.
"""
from __future__ import annotations

import importlib
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable

from mlflow.tracking import MlflowClient

from defense.dryrun_data import DryData, key_of
from defense.dryrun_shrink import (ATTACK_CAPS, EPOCHS, FRONTEND_CAPS, capped, dry_evaluation,
                                   lowered, widest_window)
from defense.dryrun_grid import MissingCells, Model, store_uri
from evaluation.tracking import iter_runs
from evaluation.ui_view import save_runs_view
from experiments import study_module


class StudyDry:
    """The dry run of a ``study:`` experiment; subclasses name its models, attacks and expected runs."""

    study_name = ""

    def __init__(self, raw: dict[str, Any], overrides: dict[str, Any]) -> None:
        self.raw = raw
        self.overrides = overrides
        self.module = study_module(self.study_name)
        self.study = self.load(raw, overrides)

    def load(self, raw: dict[str, Any], overrides: dict[str, Any]) -> Any:
        """The resolved study (its ``experiments/<study>_config.py``'s ``load_study``)."""
        return importlib.import_module(f"experiments.{self.study_name}_config").load_study(raw, overrides)

    @property
    def name(self) -> str:
        return str(self.study.name)

    def models(self) -> list[Model]:
        raise NotImplementedError

    def datasets(self) -> list[dict[str, Any]]:
        return [self.models()[0][1]]

    def attacks(self) -> dict[str, dict[str, Any]]:
        """Attack row → its keyword config (the keys a ``attacks.<row>.<key>`` override reaches)."""
        raise NotImplementedError

    def window(self) -> int:
        return widest_window([lowered(m[2], FRONTEND_CAPS) for m in self.models()],
                             [lowered(c, ATTACK_CAPS) for c in self.attacks().values()])

    def steps(self) -> int:
        return 0

    def dry_overrides(self, data: dict[str, DryData]) -> dict[str, Any]:
        """The overrides every study shares (data, epochs, attack rows, evaluation) and the study's own."""
        dataset = self.datasets()[0]
        short = data[key_of(dataset)].short
        samples = round(float(short["clip_seconds"]) * int(dataset["sample_rate"]))
        out = {**{f"dataset.{k}": v for k, v in short.items()}, "train.epochs": EPOCHS}
        for row, cfg in self.attacks().items():
            out.update(capped(cfg, ATTACK_CAPS, f"attacks.{row}."))
        evaluation = asdict(self.study.evaluation)
        dry = dry_evaluation(evaluation, samples)
        out.update({f"evaluation.{k}": v for k, v in dry.items() if v != evaluation[k]})
        return {**out, **self.own_overrides()}

    def own_overrides(self) -> dict[str, Any]:
        return {}

    def run(self, data: dict[str, DryData], folder: Path, progress: Callable[..., None]) -> None:
        self.module.run(self.raw, {**self.overrides, **self.dry_overrides(data)},
                        tracking_uri=store_uri(folder / "outputs"), outputs=folder / "outputs", progress=progress)

    def check(self, uri: str) -> list[str]:
        client = MlflowClient(uri)
        exp = client.get_experiment_by_name(self.name)
        runs = list(iter_runs(exp.experiment_id, client=client)) if exp is not None else []
        found: dict[str, list[Any]] = {}
        for run in runs:
            found.setdefault(run.data.tags.get("advaudio.kind", ""), []).append(run)
        lines = []
        for kind, (count, metric) in self.expected().items():
            got = [r for r in found.get(kind, []) if r.data.tags.get("advaudio.status") == "finished"]
            if len(got) < count:
                raise MissingCells(f"{len(got)} finished {kind} runs, expected {count}")
            empty = [r.info.run_name for r in got if metric and r.data.metrics.get(metric, 0) < 1]
            if empty:
                raise MissingCells(f"{kind} run {empty[0]} has no {metric}")
            lines.append(f"{count} {kind} runs" + (f", each with >= 1 {metric.replace('_', ' ')}" if metric else ""))
        return ["; ".join(lines)]

    def expected(self) -> dict[str, tuple[int, str | None]]:
        """Kind of run → (how many, the metric that must be >= 1 on each)."""
        raise NotImplementedError

    def report(self, uri: str, folder: Path) -> str:
        text = self.module.report(self.name, uri, folder / "outputs")
        exp = MlflowClient(uri).get_experiment_by_name(self.name)
        save_runs_view(exp.experiment_id, MlflowClient(uri))
        return f"{len(text.splitlines())} lines of tables"


class Seed000Dry(StudyDry):
    study_name = "seed000"

    def models(self) -> list[Model]:
        cfg = self.study.train_cfg
        return [(f"{cfg['dataset']['name']} / {cfg['frontend']['name']} / {cfg['victim']['backbone']}",
                 cfg["dataset"], cfg["frontend"], cfg["victim"])]

    def attacks(self) -> dict[str, dict[str, Any]]:
        return {name: spec.kwargs for name, spec in self.study.attacks.items()}

    def own_overrides(self) -> dict[str, Any]:
        return capped(self.study.train_cfg["frontend"], FRONTEND_CAPS, "frontend.")

    def expected(self) -> dict[str, tuple[int, str | None]]:
        return {"train": (1, None), "clean": (1, None), "attack": (len(self.study.attacks), "attempts")}


class Seed001Dry(StudyDry):
    study_name = "seed001"

    def models(self) -> list[Model]:
        return [(f"{cfg['dataset']['name']} / {cfg['frontend']['name']} / {cfg['victim']['backbone']} ({name})",
                 cfg["dataset"], cfg["frontend"], cfg["victim"]) for name, cfg in self.study.models.items()]

    def attacks(self) -> dict[str, dict[str, Any]]:
        return {label: {k: v for k, v in cfg.items() if k != "name"} for label, cfg in self.study.attacks.items()}

    def own_overrides(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name, cfg in self.study.models.items():
            out.update(capped(cfg["frontend"], FRONTEND_CAPS, f"models.{name}.frontend."))
        return out

    def expected(self) -> dict[str, tuple[int, str | None]]:
        models, attacks = len(self.study.models), len(self.study.attacks)
        return {"train": (models, None), "attack": (models * attacks, "base_size"),
                "transfer": (len(self.study.transfer), None)}


class Seed003Dry(StudyDry):
    study_name = "seed003"

    def models(self) -> list[Model]:
        dataset = self.study.dataset
        entries = {**self.study.spectrogram_models, "waveform": self.study.waveform_model}
        return [(f"{dataset['name']} / {m['frontend']['name']} / {m['victim']['backbone']} ({name})", dataset,
                 m["frontend"], m["victim"]) for name, m in entries.items()]

    def attacks(self) -> dict[str, dict[str, Any]]:
        return {key: {k: v for k, v in cfg.items() if k != "name"} for key, cfg in self.study.attacks.items()}

    def own_overrides(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name, model in self.study.spectrogram_models.items():
            out.update(capped(model["frontend"], FRONTEND_CAPS, f"spectrogram_models.{name}.frontend."))
        if self.study.evaluation.max_recordings is None:
            out["evaluation.max_recordings"] = 2 * len(self.models())
        return out

    def expected(self) -> dict[str, tuple[int, str | None]]:
        folds, inputs = len(self.study.folds()), 1 + len(self.study.spectrogram_models)
        return {"train": (folds * inputs, None), "seed003_eval": (folds * inputs, None)}


STUDIES: dict[str, type[StudyDry]] = {"seed000": Seed000Dry, "seed001": Seed001Dry, "seed003": Seed003Dry}


def study_dry(raw: dict[str, Any], overrides: dict[str, Any]) -> StudyDry:
    """The dry run of the study ``raw`` names (an unknown study is a one-line ConfigError)."""
    study_module(str(raw["study"]))
    return STUDIES[str(raw["study"])](raw, overrides)
