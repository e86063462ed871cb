"""Seed 001's transfer matrix between the models of a seed 004 grid, from the grid's runs to its report."""
from __future__ import annotations

from pathlib import Path

import mlflow
import pytest

from defense import runner
from defense.grid import load_grid
from defense.grid_transfer import log_grid_transfer
from evaluation.tracking import iter_runs, setup_tracking
from tiny_configs import TINY


@pytest.mark.slow
def test_grid_report_shows_transfer_between_its_models(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ADVAUDIO_CACHE", str(tmp_path / "cache"))
    path = tmp_path / "tiny.yaml"
    path.write_text(TINY)
    outputs = tmp_path / "out"
    grid = load_grid(path)
    runner.run_grid(grid, outputs=outputs)
    uri = f"sqlite:///{(outputs / 'mlflow.db').resolve()}"
    exp_id = setup_tracking(grid.name, uri, outputs)
    parent = next(r for r in iter_runs(exp_id) if r.data.tags.get("advaudio.kind") == "grid")
    # run_grid logged it (one group, one table attack: DeepFool); a rerun rewrites the same run
    assert log_grid_transfer(grid, parent.info.run_id, uri) == 1
    transfers = [r for r in iter_runs(exp_id) if r.data.tags.get("advaudio.kind") == "transfer"]
    assert len(transfers) == 1 and transfers[0].data.tags["mlflow.parentRunId"] == parent.info.run_id

    from evaluation.report import format_tables
    from evaluation.report_data import collect

    mlflow.set_tracking_uri(uri)
    data = collect(grid.name, uri, n_boot=100)
    (coords, record), = data.transfers
    assert coords["attack"] == "deepfool_l2" and record.models == ["resnet56/none", "resnet56/fgsm_mix"]
    text = format_tables(data)
    assert "Transfer (seed 001, Table 5) of deepfool_l2 examples" in text and "| resnet56/fgsm_mix" in text
