"""The grid logs each model's per-clip worst case over its table attacks, and the tables lead with it (issue 18
item 1), on a tiny real grid."""
from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from defense.grid import load_grid
from defense.runner import run_grid
from evaluation.harness import from_record
from evaluation.report import table_3
from evaluation.report_data import WORST_CASE, collect
from evaluation.tracking import iter_runs, load_record, setup_tracking
from tiny_configs import TWO_TABLE_ATTACKS

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]


def test_worst_case_runs_eps_r_and_table_rows(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ADVAUDIO_CACHE", str(tmp_path / "cache"))
    grid_file = tmp_path / "tiny.yaml"
    grid_file.write_text(TWO_TABLE_ATTACKS)
    outputs = tmp_path / "out"
    run_grid(load_grid(grid_file), outputs=outputs)
    run_grid(load_grid(grid_file), outputs=outputs)  # a rerun reuses every run, the ensembles' too
    exp_id = setup_tracking("tiny", None, outputs)
    runs = list(iter_runs(exp_id))
    attacks = [r for r in runs if r.data.tags.get("advaudio.kind") == "attack"]
    ensembles = [r for r in attacks if r.data.tags["advaudio.attack"] == "ensemble_l2"]
    assert sorted(r.data.tags["advaudio.defense"] for r in ensembles) == ["fgsm_mix", "none"]
    for run in ensembles:
        record = load_record(run.info.run_id)
        members = [from_record(load_record(r.info.run_id)) for r in attacks
                   if r.data.tags["advaudio.defense"] == run.data.tags["advaudio.defense"]
                   and r.data.tags["advaudio.attack"] in ("fgsm", "deepfool_l2")]
        assert len(members) == 2
        expected = torch.minimum(members[0].eps_star, members[1].eps_star)
        assert torch.equal(from_record(record).eps_star, expected)
        by_name = {m.attack: m for m in members}
        for i, (star, who) in enumerate(zip(expected.tolist(), record["found_by"])):  # who decided each clip
            assert who == "" if not math.isfinite(star) else float(by_name[who].eps_star[i]) == star
        assert sum(run.data.metrics[f"found_by.{a}"] for a in ("fgsm", "deepfool_l2")) == \
            sum(math.isfinite(s) for s in expected.tolist())
    for run in attacks:
        assert 0 <= run.data.metrics["broke_share"] <= 1
        if not run.data.tags["advaudio.attack"].startswith("ensemble"):
            weak = run.data.metrics["broke_share"] < 0.5
            assert run.data.tags["advaudio.weak"] == str(weak).lower()
    model = next(r for r in runs if r.data.tags.get("advaudio.kind") == "train"
                 and r.data.tags["advaudio.defense"] == "fgsm_mix")
    assert {"eps_r.ensemble_l2", "eps_r_ci_low.ensemble_l2", "broke_share.fgsm"} <= set(model.data.metrics)
    table = table_3(collect("tiny", f"sqlite:///{(outputs / 'mlflow.db').resolve()}", n_boot=200), "fgsm_mix")
    assert list(table["attacks"]) == [f"l2{WORST_CASE}", "l2", "l2: deepfool_l2", "l2: fgsm"]
