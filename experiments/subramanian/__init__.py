"""Subramanian et al. (2019), "Adversarial attacks in sound event classification", as a study
(``advaudio experiment subramanian``; earlier name ``seed001``)."""
from __future__ import annotations

from defense.studies import STUDIES, Study
from experiments.subramanian import config, dry, plan, report, run

STUDIES.register(Study(config.STUDY, "Subramanian et al. 2019, adversarial attacks in sound event classification",
                       run.run, report.report, dry.SubramanianDry, plan.plan, aliases=config.ALIASES,
                       experiments={"seed001": "subramanian", "seed001_full": "subramanian_full"}))
