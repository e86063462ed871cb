"""The dry run every study shares (:mod:`defense.dryrun`): the overrides that make a study's real ``run`` dry
(:mod:`defense.dryrun_shrink`) and the check that every step left its runs; each study's subclass (its ``dry``
module) names its models, attack rows and expected runs.

A study is run once, by its own ``run`` and ``report``, with its command-line overrides plus the dry ones: the
data set's stand-in (root, short clips), one training epoch, each model's front-end and each attack row shrunk, the
evaluation's clip counts and resamples lowered. The check reads the throw-away store: a training run per model (per
test fold for Koerich et al.), every attack row's run with at least one attempt (Prinz & Flexer; Subramanian et
al.: on each model, every clip attacked), Subramanian et al.'s transfer runs, Koerich et al.'s evaluation runs per
fold and input.
"""
from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable, Sequence

from mlflow.tracking import MlflowClient

from defense.dryrun_data import DryData, key_of
from defense.dryrun_grid import MissingCells, Model, store_uri
from defense.dryrun_models import ModelCheck
from defense.dryrun_shrink import ATTACK_CAPS, FRONTEND_CAPS, EPOCHS, capped, dry_evaluation, lowered, widest_window
from evaluation.tracking import iter_runs
from evaluation.ui_view import save_runs_view


class StudyDry:
    """The dry run of a ``study:`` experiment; subclasses name its models, attacks and expected runs, and the study's
    own functions as class keywords: ``class KoerichDry(StudyDry, load=load_study, run=run, report=report)``
    (``load(raw, overrides)`` resolves the study, ``run`` and ``report`` are those the study registers)."""

    load_study: Callable[[dict[str, Any], dict[str, Any]], Any]
    run_study: Callable[..., str]
    report_study: Callable[[str, str, Path], str]

    def __init_subclass__(cls, *, load: Callable[[dict[str, Any], dict[str, Any]], Any], run: Callable[..., str],
                          report: Callable[[str, str, Path], str], **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls.load_study, cls.run_study, cls.report_study = staticmethod(load), staticmethod(run), staticmethod(report)

    def __init__(self, raw: dict[str, Any], overrides: dict[str, Any]) -> None:
        self.raw = raw
        self.overrides = overrides
        self.study = self.load_study(raw, overrides)

    @property
    def name(self) -> str:
        return str(self.study.name)

    def models(self) -> list[Model]:
        raise NotImplementedError

    def datasets(self) -> list[dict[str, Any]]:
        return [self.models()[0][1]]

    def sized(self, checks: Sequence[ModelCheck]) -> None:
        """A study runs its steps in its own order, whatever the full-size checks of its models found."""

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
        self.run_study(self.raw, {**self.overrides, **self.dry_overrides(data)},
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
        text = self.report_study(self.name, uri, folder / "outputs")
        exp = MlflowClient(uri).get_experiment_by_name(self.name)
        save_runs_view(exp.experiment_id, MlflowClient(uri))
        return f"{len(text.splitlines())} lines of tables"
