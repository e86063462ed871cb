"""Koerich et al. (2020), "Cross-representation transferability of adversarial attacks: from spectrograms to audio
waveforms", as a study (``advaudio experiment koerich``; earlier name ``seed003``)."""
from __future__ import annotations

from defense.studies import STUDIES, Study
from experiments.koerich import config, dry, plan, report, run

STUDIES.register(Study(config.STUDY, "Koerich et al. 2020, cross-representation transferability of adversarial attacks",
                       run.run, report.report, dry.KoerichDry, plan.plan, aliases=config.ALIASES,
                       experiments={"seed003": "koerich", "seed003_full": "koerich_full"}))
