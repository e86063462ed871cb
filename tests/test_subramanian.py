"""Subramanian et al. study: configuration errors, the full-size config, and a tiny run + report from MLflow."""
from __future__ import annotations

import math
from pathlib import Path

import mlflow
import pandas as pd
import pytest

from defense.studies import STUDY_TAG
from experiments.subramanian.config import load_study
from defense.config import load_option
from evaluation.tracking import artifact_json
from victims.registry import ConfigError

CPU = load_option("experiment", "subramanian")


@pytest.mark.parametrize("overrides, message", [
    ({"attacks.fgsm.domain": "representation"}, r"attack 'fgsm' runs in the representation domain"),
    ({"transfer": ["deepfool", "lbfgs"]}, r"transfer names 'lbfgs', which is not an untargeted attack"),
    ({"targeted_classes": ["cello", "violin", "cello"]}, r"targeted_classes repeats 'cello': a targeted pair needs "
                                                          r"source != target"),
    ({"models.m5.dataset.classes": ["cello", "violin"]}, r"models 'apcnn' and 'm5' are trained on different class "
                                                         r"sets"),
    ({"fixed_snr_db": None}, r"fixed-budget attack 'noise' is scaled per clip to fixed_snr_db"),
    ({"models.resnet.victim": "resnet18"}, r"unknown model 'resnet' in override"),
    ({"evaluation.n_example": 3}, r"unknown key 'evaluation.n_example'"),
    ({"attacks.cw.max_iteration": 3}, r"attack 'cw': unknown key 'max_iteration'"),
    ({"models.m5.victim.widht": 3}, r"model 'm5': unknown key 'victim.widht'"),
    ({"clips": 3}, r"unknown key 'clips' for study subramanian"),
])
def test_bad_configuration_is_a_one_line_error(overrides: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as err:
        load_study(CPU, overrides)
    assert "\n" not in str(err.value)


def test_cpu_config_resolves_three_models_of_one_data_set() -> None:
    study = load_study(CPU, {"models.m5.victim.width": 16, "train.epochs": 1})
    assert list(study.models) == ["apcnn", "cnn2d", "m5"]
    assert [m["frontend"]["name"] for m in study.models.values()] == ["mel_db", "mel_db", "waveform"]
    assert study.models["m5"]["victim"]["width"] == 16 and study.models["apcnn"]["train"]["epochs"] == 1
    assert study.targeted == {"noise": False, "fgsm": False, "deepfool": False, "cw": False, "cw_targeted": True,
                              "lbfgs": True}
    assert study.attacks["deepfool"]["name"] == "deepfool" and study.fixed_snr_db == 20.0


def test_full_config_follows_seed_001() -> None:
    """ESC-50 at 32 kHz, STFT 1024 / 512, 64 mel bands; the attack settings of the paper's published code."""
    study = load_study(load_option("experiment", "subramanian_full"))
    assert len(study.models) == 6 and sum(m["frontend"]["name"] == "waveform" for m in study.models.values()) == 2
    model = study.models["vgg16"]
    assert model["dataset"]["name"] == "esc50" and model["dataset"]["sample_rate"] == 32000
    assert (model["frontend"]["n_fft"], model["frontend"]["hop"], model["frontend"]["n_mels"]) == (1024, 512, 64)
    cw, lbfgs, deepfool = study.attacks["cw"], study.attacks["lbfgs"], study.attacks["deepfool"]
    assert (cw["learning_rate"], cw["initial_const"], cw["binary_search_steps"], cw["max_iterations"]) == \
        (1e-5, 0.01, 2, 1000)
    assert cw["confidence"] == pytest.approx(math.log(49), abs=0.01)  # p_true < 1/K with K = 50
    assert study.attacks["cw_targeted"]["confidence"] == pytest.approx(math.log(0.975 / 0.025), abs=0.01)
    assert (lbfgs["initial_const"], lbfgs["binary_search_steps"], lbfgs["max_iterations"]) == (0.1, 2, 1000)
    assert (deepfool["overshoot"], deepfool["steps"]) == (0.02, 200)
    assert study.evaluation.n_examples == 300 and study.evaluation.targeted_per_class == 6
    assert study.fixed_snr_db == 20.0 and study.transfer == ["deepfool", "cw"]


TINY = {
    "study": "subramanian", "name": "tiny001", "dataset": "gm_instruments", "train": "demo",
    "models": {"cnn2d": {"frontend": "mel_db_seed001_8k", "victim": "koerich_cnn2d",
                         "overrides": {"victim.dense": 8, "frontend.n_mels": 16}},
               "m5": {"frontend": "waveform", "victim": "m5", "overrides": {"victim.width": 4}}},
    "attacks": {"noise": {"option": "noise", "snr_db": None},
                "fgsm": {"option": "fgsm", "domain": "waveform", "norm": "linf"},
                "deepfool": {"option": "deepfool_l2", "domain": "waveform", "steps": 5},
                "cw": {"option": "cw_l2", "domain": "waveform", "learning_rate": 0.01, "initial_const": 10.0,
                       "binary_search_steps": 1, "max_iterations": 5},
                "lbfgs": {"option": "lbfgs", "domain": "waveform", "targeted": True, "binary_search_steps": 1,
                          "max_iterations": 3}},
    "fixed_snr_db": 20.0, "transfer": ["deepfool", "cw"], "targeted_classes": ["flute", "hi_hat", "cello"],
    "evaluation": {"n_examples": 6, "targeted_per_class": 1, "n_boot": 50, "wavs": 1},
    "overrides": {"dataset.classes": ["flute", "hi_hat", "cello"], "dataset.clips_per_class": 8,
                  "dataset.clip_seconds": 0.125, "dataset.sample_rate": 8000, "dataset.split.test_fraction": 0.34,
                  "train.epochs": 1, "train.batch_size": 8},
}


@pytest.mark.slow  # trains and attacks two models end to end: 9 s on a loaded machine
@pytest.mark.timeout(600)
def test_tiny_study_runs_logs_resumes_and_reports_from_mlflow(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from experiments.subramanian import report, run
    from experiments.subramanian.metrics import RECORD
    from evaluation.tracking import iter_runs, setup_tracking

    monkeypatch.setenv("ADVAUDIO_CACHE", str(tmp_path / "cache"))
    outputs = tmp_path / "out"
    ticks: list[str] = []
    name = run.run(TINY, {}, tracking_uri=None, outputs=outputs, progress=ticks.append)
    assert name == "tiny001" and len(ticks) == 2 + 2 * 5 + 2
    exp_id = setup_tracking(name, None, outputs)
    assert mlflow.get_experiment(exp_id).tags[STUDY_TAG] == "subramanian"
    runs = list(iter_runs(exp_id))
    kinds = pd.Series([r.data.tags.get("advaudio.kind") for r in runs]).value_counts().to_dict()
    assert kinds == {"study": 1, "train": 2, "attack": 10, "transfer": 2}
    attack = next(r for r in runs if r.data.tags.get("advaudio.attack") == "deepfool"
                  and r.data.tags.get("advaudio.kind") == "attack")
    assert {"success_rate", "success_rate_ci_low", "snr_db", "conf_true_adv", "base_size"} <= set(attack.data.metrics)
    assert all(r.data.tags.get("mlflow.parentRunId") for r in runs if r.data.tags.get("advaudio.kind") != "study")

    again: list[str] = []  # a rerun reads every finished run back instead of attacking again
    run.run(TINY, {}, tracking_uri=None, outputs=outputs, progress=again.append)
    assert len(list(iter_runs(exp_id))) == len(runs)

    mlflow.set_tracking_uri("file:///nonexistent")  # the report must not lean on the run's process state
    store = f"sqlite:///{(outputs / 'mlflow.db').resolve()}"
    text = report.report(name, store, outputs)
    reports = outputs / "reports" / name
    for stem in ("table_1_models", "table_2_attacks", "table_3_per_model", "table_4_lbfgs_snr",
                 "table_5_transfer", "direction_checks"):
        assert (reports / f"{stem}.csv").is_file() and (reports / f"{stem}.md").is_file()
    assert "Table 5" in text
    table_2 = pd.read_csv(reports / "table_2_attacks.csv")
    assert list(table_2["attack"]) == ["noise", "fgsm", "deepfool", "cw"]
    client = mlflow.MlflowClient(store)

    def record(run_id: str) -> dict:
        return artifact_json(run_id, RECORD, client)

    for _, row in table_2.iterrows():  # attempts and success rate recomputed from both models' per-attempt records
        success = [hit for r in runs if r.data.tags.get("advaudio.kind") == "attack"
                   and r.data.tags.get("advaudio.attack") == row["attack"] for hit in record(r.info.run_id)["success"]]
        assert row["attempts"] == len(success) > 0, row
        assert row["success %"].startswith(f"{100 * sum(success) / len(success):.1f}"), (row, success)
    table_5 = pd.read_csv(reports / "table_5_transfer.csv", index_col=0, keep_default_na=False)
    assert list(table_5.columns) == ["cnn2d", "m5"] and table_5.at["m5", "m5"] == "NA"
    checks = pd.read_csv(reports / "direction_checks.csv")
    assert checks["verdict"].str.match(r"^(reproduces|does not reproduce|undecided)").all()
