"""``evaluation.crafted``: the one writer and reader of an attack run's ``adversarial.pt`` (grids' transfer matrix
and Subramanian et al.'s transfer rows read the same file)."""
from __future__ import annotations

from pathlib import Path

import mlflow
import pytest
import torch

from evaluation.crafted import CRAFTED_ARTIFACT, load_crafted, log_crafted
from evaluation.tracking import setup_tracking
from victims.registry import ConfigError

pytestmark = pytest.mark.timeout(120)


def test_kept_examples_are_read_back_as_written_and_a_run_without_them_has_none(tmp_path: Path) -> None:
    exp_id = setup_tracking("crafted", None, tmp_path)
    index, adversarial = torch.tensor([0, 3]), torch.randn(2, 1, 64, dtype=torch.float64)
    with mlflow.start_run(experiment_id=exp_id) as kept:
        log_crafted(index, adversarial)
    with mlflow.start_run(experiment_id=exp_id) as bare:
        pass
    found = load_crafted(kept.info.run_id)
    assert found is not None
    assert torch.equal(found[0], index)
    assert found[1].dtype == torch.float32 and torch.equal(found[1], adversarial.float())
    assert load_crafted(bare.info.run_id) is None
    from experiments.subramanian.run import _read_crafted

    assert torch.equal(_read_crafted(kept.info.run_id)[0], index)
    with pytest.raises(ConfigError, match=f"finished attack run {bare.info.run_id} has no {CRAFTED_ARTIFACT}"):
        _read_crafted(bare.info.run_id)
