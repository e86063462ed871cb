"""The audio leaderboard's first content as a study (issue 21 item 5): defenses × backbones trained on one data
set and benchmarked under its threat models (``advaudio experiment leaderboard_fsdd``)."""
from __future__ import annotations

from defense.studies import STUDIES, Study
from experiments.leaderboard import config, dry, plan, report, run

STUDIES.register(Study(config.STUDY, "the audio leaderboard (issue 21): defenses x backbones under standard threat "
                       "models", run.run, report.report, dry.LeaderboardDry, plan.plan))
