"""Prinz & Flexer (2021), "End-to-end adversarial white box attacks on music instrument classification", as a
study (``advaudio experiment prinz_flexer``; earlier name ``seed000``)."""
from __future__ import annotations

from defense.studies import STUDIES, Study
from experiments.prinz_flexer import config, dry, plan, report, run

STUDIES.register(Study(config.STUDY, "Prinz & Flexer 2021, end-to-end adversarial white box attacks on music "
                       "instrument classification", run.run, report.report, dry.PrinzFlexerDry, plan.plan,
                       aliases=config.ALIASES,
                       experiments={"seed000": "prinz_flexer", "seed000_full": "prinz_flexer_full"}))
