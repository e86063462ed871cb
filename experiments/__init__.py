"""Studies: experiments that reproduce one paper each, beside the defense grids of ``defense/grid.py``.

One subpackage per paper, each with its ``config`` (the experiment file's layout, resolved and checked), ``run``
(train, attack and log to MLflow), ``report`` (the paper's tables rebuilt from MLflow alone), ``metrics`` (the
study's own measures as pure functions), ``dry`` and ``plan`` (its dry run and cost plan); ``shared`` holds what
all of them do alike. Importing this package registers every study in :data:`defense.studies.STUDIES`, which is
how the command line finds them:

- ``prinz_flexer``: Prinz & Flexer (2021), end-to-end waveform attacks on an instrument classifier;
- ``subramanian``: Subramanian et al. (2019), attacks on sound event classifiers and their transfer;
- ``koerich``: Koerich et al. (2020), cross-representation transfer from spectrograms to waveforms;
- ``leaderboard``: the audio leaderboard's defenses × backbones under standard threat models (issue 21).
"""
from __future__ import annotations

from experiments import koerich, leaderboard, prinz_flexer, subramanian

__all__ = ["koerich", "leaderboard", "prinz_flexer", "subramanian"]
