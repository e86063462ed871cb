"""The experiment grid end to end on a tiny grid: MLflow runs, ε_r, sanity checks, and resume after a kill."""
from __future__ import annotations

import math
import tempfile
from pathlib import Path

import pytest

from defense.grid import load_grid
from defense.runner import count_steps, run_grid
from eps_r_check import LEARNS, check_logged_eps_r
from evaluation.tracking import RECORD_ARTIFACT, iter_runs, setup_tracking
from tiny_configs import TINY
from victims.registry import ConfigError


@pytest.fixture
def grid_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("ADVAUDIO_CACHE", str(tmp_path / "cache"))
    path = tmp_path / "tiny.yaml"
    path.write_text(TINY)
    return path


def _runs(outputs: Path, kind: str) -> list:
    exp_id = setup_tracking("tiny", None, outputs)
    return [r for r in iter_runs(exp_id) if r.data.tags.get("advaudio.kind") == kind]


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_grid_runs_logs_and_resumes(grid_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The tiny grid runs, logs, resumes after a kill, and leaves nothing in the system's temporary folder (records,
    examples, crafted inputs and models read back for transfer and the report: MLflow's downloads once stayed)."""
    outputs = tmp_path / "out"
    scratch = tmp_path / "system-tmp"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    grid = load_grid(grid_file, LEARNS)
    assert count_steps(grid) == 2 * (1 + 2)
    ticks: list[str] = []
    inside: list[str] = []

    def kill_after_three(message: str, advance: bool = True) -> None:
        (ticks if advance else inside).append(message)
        if len(ticks) == 3:
            raise KeyboardInterrupt  # a kill after both models trained and one evaluation finished

    with pytest.raises(KeyboardInterrupt):
        run_grid(grid, outputs=outputs, progress=kill_after_three)
    first_attack_runs = {r.info.run_id for r in _runs(outputs, "attack")}
    assert len(first_attack_runs) == 1
    epochs = grid.cell_config("gm_instruments", "stft_db_small", "resnet56", "none")["train"]["epochs"]
    assert f"training stft_db_small/resnet56/seed0/none: epoch {epochs}/{epochs}" in " ".join(inside)
    assert any(m.startswith("attacking stft_db_small/resnet56/seed0/none with ") for m in inside)

    resumed: list[str] = []
    rows = run_grid(load_grid(grid_file, LEARNS), outputs=outputs,
                    progress=lambda m, advance=True: resumed.append(m))
    assert len(rows) == 4
    trains, attacks = _runs(outputs, "train"), _runs(outputs, "attack")
    assert len(trains) == 2, "resume must reuse the two training runs, not start new ones"
    assert len(attacks) == 4 and first_attack_runs <= {r.info.run_id for r in attacks}
    defended = [r for r in attacks if r.data.tags["advaudio.defense"] == "fgsm_mix"]
    for run in defended:
        assert {"eps_r", "eps090_ratio", "fooling_auc", "sanity.monotone_success", "eps_r_ci_low", "eps_r_ci_high",
                "eps_r_p", "fooling_auc_ci_low", "eps_star_resolution"} <= set(run.data.metrics)
        assert run.data.tags["advaudio.norm"] == "l2" and run.data.tags["advaudio.seed"] == "0"
    # logged eps_r, its interval, p-value and base size = a recomputation from the two models' per-clip records
    expected = check_logged_eps_r(attacks, trains, grid.evaluation)
    assert len(expected) == 2 and any(math.isfinite(e["eps_r"]) for e in expected.values()), expected
    model = next(r for r in trains if r.data.tags["advaudio.defense"] == "fgsm_mix")
    assert {"eps_r.fgsm", "eps_r.deepfool_l2", "eps_r_ci_low.fgsm", "eps_r_p.deepfool_l2", "test_accuracy", "sanity.gradients_representation_ce", "sanity.gradients_representation_margin",
            "sanity.gradient_masking.single_step_l2",  # FGSM's gain vs DeepFool's
            "sanity.gradient_masking.transfer_l2"} <= set(model.data.metrics)  # the original's examples replayed
    for name in ("optimality.fgsm", "optimality.deepfool_l2"):  # share within 5 % of the per-clip best
        assert 0 <= model.data.metrics[name] <= 1 or math.isnan(model.data.metrics[name]), name
        low, high = (model.data.metrics[name.replace("optimality.", f"optimality_ci_{b}.")] for b in ("low", "high"))
        assert low <= model.data.metrics[name] <= high or math.isnan(model.data.metrics[name]), name
    assert "sanity.gradient_masking.single_step_l2" not in next(
        r for r in trains if r.data.tags["advaudio.defense"] == "none").data.metrics
    assert all(r.data.tags.get("mlflow.parentRunId") for r in attacks)
    # the report reads back every attack run's per-clip record (the source of its bootstrap intervals)
    from evaluation.report_data import collect

    data = collect("tiny", f"sqlite:///{(outputs / 'mlflow.db').resolve()}", n_boot=200)
    assert sorted(data.records) == sorted(r.info.run_id for r in attacks)
    assert len({ev.labels.numel() for ev in data.records.values()}) == 1  # the same clips for every model
    # seed 004's Fig. 1: every attack run keeps its example, the grid's run holds one figure per model
    from mlflow.tracking import MlflowClient

    from evaluation.examples import EXAMPLE_ARTIFACT

    client = MlflowClient()
    assert all(EXAMPLE_ARTIFACT in {a.path for a in client.list_artifacts(r.info.run_id)} for r in attacks)
    (grid_run,) = _runs(outputs, "grid")
    assert {a.path for a in client.list_artifacts(grid_run.info.run_id, "plots")} >= {
        f"plots/fig1_gm_instruments_resnet56_{d}.png" for d in ("none", "fgsm_mix")}
    left = [p.name for p in scratch.iterdir()  # but MLflow's empty lock files and torch's compile cache
            if not p.name.startswith(("db_init_lock-", "torchinductor_"))]
    assert left == [], f"left in the temporary folder: {left}"
    # a finished attack run whose per-clip record is gone is not reused without it: a one-line error naming the run
    lost = next(r.info.run_id for r in attacks if r.data.tags["advaudio.defense"] == "none"
                and r.data.tags["advaudio.attack"] == "fgsm")
    next((outputs / "mlartifacts").glob(f"**/{lost}/artifacts/{RECORD_ARTIFACT}")).unlink()
    with pytest.raises(ConfigError, match=f"finished attack run {lost} has no {RECORD_ARTIFACT}: it comes from"):
        run_grid(load_grid(grid_file, LEARNS), outputs=outputs)


def test_grid_errors_are_one_line(grid_file: Path) -> None:
    with pytest.raises(ConfigError, match="grid.defense must include 'none'"):
        load_grid(grid_file, {"grid.defense": ["fgsm_mix"]})
    with pytest.raises(ConfigError, match="unknown attack option 'pgd_linff'"):
        load_grid(grid_file, {"grid.attack": ["deepfool_l2", "pgd_linff"], "attack_overrides": {}})
    with pytest.raises(ConfigError, match="unknown key 'evaluation.n_example'"):
        load_grid(grid_file, {"evaluation.n_example": 3})
    with pytest.raises(ConfigError, match="unknown key 'train.epoch'"):
        load_grid(grid_file, {"train.epoch": 3})
    with pytest.raises(ConfigError, match="not in grid.attack"):
        load_grid(grid_file, {"grid.attack": ["fgsm"]})
    # issue 7 item 1: budgets belong to a norm; an L0 or waveform attack needs its own eps_max
    with pytest.raises(ConfigError, match=r"no evaluation.eps_max.representation.l0 \(attack 'jsma'\)"):
        load_grid(grid_file, {"grid.attack": ["jsma"], "attack_overrides": {}})
    with pytest.raises(ConfigError, match="search_eps_max.representation.l2 = 1.0 must be >= eps_max 3.0"):
        load_grid(grid_file, {"evaluation.search_eps_max.representation.l2": 1.0})
    with pytest.raises(ConfigError, match="table_attacks must list attacks of grid.attack"):
        load_grid(grid_file, {"table_attacks": ["bim_a"]})
    with pytest.raises(ConfigError, match="seeds must be"):
        load_grid(grid_file, {"seeds": [0, 0]})


def test_grid_attack_metadata_and_seeds(grid_file: Path) -> None:
    grid = load_grid(grid_file, {"seeds": [0, 1], "evaluation.eps_max.representation.l0": 200})
    assert grid.attack_info["fgsm"].family == "single_step" and not grid.attack_info["fgsm"].in_tables
    assert grid.attack_info["deepfool_l2"].in_tables and grid.attack_info["deepfool_l2"].norm == "l2"
    assert [m[3] for m in grid.models()] == [0, 1] and len(list(grid.cells())) == 2 * 2
    assert grid.cell_config("gm_instruments", "stft_db_small", "resnet56", "none", 1)["train"]["seed"] == 1
    assert grid.evaluation.budgets("representation", "l0") == (200.0, 200.0)


@pytest.mark.slow
def test_grid_runs_on_a_local_ray_cluster(grid_file: Path, tmp_path: Path) -> None:
    """The same grid with one Ray task per model column (a local Ray instance started by the runner)."""
    outputs = tmp_path / "out"
    finished: list[str] = []
    only_fgsm = {"grid.attack": ["fgsm"], "attack_overrides": {"fgsm": {"domain": "representation", "norm": "l2"}}}
    rows = run_grid(load_grid(grid_file, only_fgsm), outputs=outputs,
                    executor="ray", progress=lambda m, advance=True: finished.append(m))
    assert finished == ["finished column stft_db_small/resnet56/seed0"]
    assert {(r["defense"], r["attack"]) for r in rows} == {("none", "fgsm"), ("fgsm_mix", "fgsm")}
    assert "eps_r" in next(r for r in rows if r["defense"] == "fgsm_mix")
    assert len(_runs(outputs, "train")) == 2 and len(_runs(outputs, "attack")) == 2


def test_a_ray_task_asks_for_a_gpu_when_its_model_trains_on_one(grid_file: Path) -> None:
    from defense.runner import ModelColumn, _gpus

    column = ModelColumn("gm_instruments", "stft_db_small", "resnet56", 0)
    assert _gpus(load_grid(grid_file, {"train.device": "cpu"}), column) == 0
    assert _gpus(load_grid(grid_file, {"train.device": "cuda:0"}), column) == 1
