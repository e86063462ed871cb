"""The dry run of the Koerich et al. study: its 2D and 1D CNNs, its attacks, and the runs it must leave."""
from __future__ import annotations

from typing import Any

from defense.dryrun_grid import Model
from defense.dryrun_shrink import FRONTEND_CAPS, capped
from experiments.dryrun import StudyDry
from experiments.koerich.config import load_study
from experiments.koerich.measure import EVAL_KIND
from experiments.koerich.report import report
from experiments.koerich.run import run


class KoerichDry(StudyDry, load=load_study, run=run, report=report):
    """The dry run of Koerich et al.'s study."""

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
        return {"train": (folds * inputs, None), EVAL_KIND: (folds * inputs, None)}
