"""Grid paths the demo and paper_004 rely on, on one tiny grid: a defense trained at ``eps: auto`` (the demo's and
fsdd's ``fgsm_mix_auto``) and a targeted attack (paper_004 targets every attack but DeepFool)."""
from __future__ import annotations

import math
from pathlib import Path

import pytest

from defense.grid import load_grid
from defense.runner import run_grid
from eps_r_check import LEARNS, check_logged_eps_r
from evaluation.tracking import iter_runs, load_record, setup_tracking
from tiny_configs import TINY_FGSM

GRID = (TINY_FGSM.replace("name: tiny", "name: tinypaths").replace("defense: [none, fgsm_mix]",
                                                                   "defense: [none, fgsm_mix_auto]")
        .replace("fgsm: {domain: representation, norm: l2}", "fgsm: {domain: representation, norm: l2, targeted: true}"))


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_eps_auto_defense_and_a_targeted_attack_in_a_grid(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ADVAUDIO_CACHE", str(tmp_path / "cache"))
    grid_file = tmp_path / "paths.yaml"
    grid_file.write_text(GRID)
    grid, outputs = load_grid(grid_file, LEARNS), tmp_path / "out"
    assert grid.attack_info["fgsm"].targeted
    run_grid(grid, outputs=outputs)
    runs = list(iter_runs(setup_tracking("tinypaths", None, outputs)))
    trains = [r for r in runs if r.data.tags.get("advaudio.kind") == "train"]
    attacks = [r for r in runs if r.data.tags.get("advaudio.kind") == "attack"]

    # eps: auto = eps_fraction x the original's median FGSM eps* on validation clips (the search range when fewer
    # than half are broken); the model trained with that number
    auto = next(r for r in trains if r.data.tags["advaudio.defense"] == "fgsm_mix_auto")
    m = auto.data.metrics
    median = m["original_val_median_fgsm_eps_star"]
    search = grid.evaluation.budgets("representation", "l2")[1]
    expected = round(m["defense_eps_fraction"] * (median if math.isfinite(median) else search), 6)
    assert m["defense_eps_fraction"] == 1.0 and m["defense_eps_auto"] == expected > 0  # tiny models: often the
    # fallback (no validation clip broken), so a break of the median branch alone can pass here
    assert float(auto.data.params["defense.eps"]) == expected and "defense.eps_fraction" not in auto.data.params

    # the targeted attack: every attacked clip (the base set) gets a class other than its own, and a clip in both
    # models' base sets the same one (eps_r pairs them)
    records = {r.data.tags["advaudio.defense"]: load_record(r.info.run_id) for r in attacks}
    assert set(records) == {"none", "fgsm_mix_auto"} and all(r.data.tags["advaudio.targeted"] == "true"
                                                             for r in attacks)
    targets = {}
    for defense, record in records.items():
        base = [i for i, b in enumerate(record["base"]) if b]
        assert record["targeted"] and len(record["targets"]) == len(base) > 0
        assert all(0 <= t < record["num_classes"] and t != record["labels"][i] for t, i in zip(record["targets"], base))
        targets[defense] = dict(zip(base, record["targets"]))
    shared = targets["none"].keys() & targets["fgsm_mix_auto"].keys()
    assert all(targets["none"][i] == targets["fgsm_mix_auto"][i] for i in shared)
    check_logged_eps_r(attacks, trains, grid.evaluation)
