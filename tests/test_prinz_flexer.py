"""Prinz & Flexer's study: its configs validate, bad ones are one-line errors, and a tiny study runs end to end
(train, attack, log to MLflow, resume, rebuild the tables from MLflow alone)."""
from __future__ import annotations

import csv
import math
from pathlib import Path

import mlflow
import pytest
import torch
import yaml

from defense.cli import main
from training.data.fsdkaggle2019 import INSTRUMENTS
from evaluation.tracking import iter_runs, load_record, setup_tracking
from defense.studies import STUDIES, STUDY_TAG
from experiments.prinz_flexer.config import AttackSpec, check_classes, load_study
from experiments.prinz_flexer.run import attempts_of
from defense.config import load_option
from victims.registry import ConfigError

TINY = """
study: prinz_flexer
name: tiny000
dataset: gm_instruments
frontend: mel_db
victim: averagepool_cnn
train: seed000
attacks:
  fgsm: {attack: fgsm, eps: 0.5, paper: fgsm_150}
  cw: {attack: cw_seed000, targets: all, alpha: 10.0, learning_rate: 0.01, clip_eps: 0.5, max_iterations: 3}
evaluation: {n_examples: 4, snr_trim: 64, batch_size: 8, n_boot: 50, wavs: 1}
overrides:
  dataset.classes: [flute, hi_hat, bass_drum]
  dataset.clips_per_class: 4
  dataset.clip_seconds: 0.25
  dataset.sample_rate: 8000
  dataset.split.test_fraction: 0.34
  frontend.n_fft: 256
  frontend.hop: 128
  frontend.n_mels: 32
  train.epochs: 1
  train.batch_size: 8
"""


@pytest.mark.parametrize("name", ["prinz_flexer", "prinz_flexer_full"])
def test_the_prinz_flexer_configs_load_and_validate(name: str) -> None:
    study = load_study(load_option("experiment", name))
    assert study.train_cfg["victim"]["backbone"] == "averagepool_cnn"
    assert study.train_cfg["frontend"]["name"] == "mel_db" and study.train_cfg["frontend"]["n_mels"] == 100
    assert {s.registry for s in study.attacks.values()} == {"fgsm", "pgdn", "cw_seed000", "cw_multiscale"}
    assert {s.mode for s in study.attacks.values()} >= {"untargeted", "all"}
    assert all(s.build().domain == "waveform" for s in study.attacks.values())


def test_the_full_config_is_seed_000s_setup() -> None:
    study = load_study(load_option("experiment", "prinz_flexer_full"))
    assert study.train_cfg["dataset"]["name"] == "fsdkaggle2019" and study.train_cfg["train"]["epochs"] == 150
    assert study.evaluation.snr_trim == 2048 and study.evaluation.seed == 21
    assert {s.paper for s in study.attacks.values()} >= {"pgdn_150", "cw_180", "cw_multiscale_accordion"}
    check_classes(study, INSTRUMENTS)  # its target class exists in the data set's labels


def _raw(**attacks: dict) -> dict:
    raw = yaml.safe_load(TINY)
    raw["attacks"] = attacks
    return raw


@pytest.mark.parametrize("attacks, message", [
    ({"cw": {"attack": "cw_seed000", "targets": [["flute", "flute"]]}},
     "targeted pair (flute -> flute) has source = target"),
    ({"pgd": {"attack": "pgdn", "domain": "representation", "eps": 0.1}}, "works in the representation domain"),
    ({"cw": {"attack": "cw_seed000", "targeted": True}}, "is targeted: set targets"),
    ({"cw": {"attack": "cw_seed000", "alpah": 1.0}}, "unknown key 'alpah'"),
    ({"cw": {"attack": "cw_seed000", "paper": "cw_999"}}, "unknown paper line 'cw_999'"),
    ({"cw": {"attack": "cw_seed000", "targets": 3}}, "targets must be random, all"),
    ({"cw": {"attack": "cw_seed001"}}, "unknown attack option 'cw_seed001'"),
    ({"cw": {"attack": "cw_seed000", "alpha": -1.0}}, "attack row 'cw'"),
])
def test_bad_attack_rows_are_one_line_config_errors(attacks: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")) as err:
        load_study(_raw(**attacks))
    assert "\n" not in str(err.value)


def test_other_bad_settings_are_one_line_config_errors() -> None:
    raw = yaml.safe_load(TINY)
    with pytest.raises(ConfigError, match="snr_trim 1000 leaves no sample of a 2000-sample clip"):
        load_study(raw, {"evaluation.snr_trim": 1000})
    with pytest.raises(ConfigError, match="unknown key 'grid'"):
        load_study({**raw, "grid": {}})
    with pytest.raises(ConfigError, match="unknown key 'evaluation.n_exampels'"):
        load_study(raw, {"evaluation.n_exampels": 3})
    study = load_study(raw, {"attacks.cw.targets": "violin"})
    with pytest.raises(ConfigError, match="unknown class 'violin'; known: flute, hi_hat, bass_drum"):
        check_classes(study, ["flute", "hi_hat", "bass_drum"])


def test_command_line_overrides_reach_attack_keys_and_target_modes() -> None:
    study = load_study(yaml.safe_load(TINY), {"attacks.cw.max_iterations": 7, "attacks.fgsm.targets": "random"})
    assert study.attacks["cw"].kwargs["max_iterations"] == 7
    assert study.attacks["fgsm"].mode == "random" and study.attacks["fgsm"].kwargs["targeted"] is True


def test_attempts_of_each_target_mode() -> None:
    names = ["a", "b", "c"]
    labels, pred = torch.tensor([0, 1, 2, 2]), torch.tensor([0, 1, 0, 2])

    def spec(mode: str, targets: object = None) -> AttackSpec:
        return AttackSpec("r", "cw_seed000", "cw_seed000", {}, mode, targets)

    clip, target = attempts_of(spec("untargeted"), labels, pred, names, 0)
    assert clip.tolist() == [0, 1, 2, 3] and target is None
    clip, target = attempts_of(spec("class", "a"), labels, pred, names, 0)  # clips of or predicted as 'a' skipped
    assert clip.tolist() == [1, 3] and target.tolist() == [0, 0]
    clip, target = attempts_of(spec("class", "c"), labels, pred, names, 0)
    assert clip.tolist() == [0, 1] and target.tolist() == [2, 2]
    clip, target = attempts_of(spec("pairs", [["c", "b"], ["a", "c"]]), labels, pred, names, 0)
    assert clip.tolist() == [2, 3, 0] and target.tolist() == [1, 1, 2]
    clip, target = attempts_of(spec("all"), labels, pred, names, 0)
    assert clip.tolist() == [0, 0, 1, 1, 2, 3, 3] and target.tolist() == [1, 2, 0, 2, 1, 0, 1]
    clip, target = attempts_of(spec("random"), labels, pred, names, 21)  # clip 2 (c seen as a) can only go to b
    assert clip.tolist() == [0, 1, 2, 3] and bool((target != pred).all() and (target != labels).all())
    assert target[2] == 1


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_tiny_study_runs_resumes_and_reports_from_mlflow(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ADVAUDIO_CACHE", str(tmp_path / "cache"))
    outputs = tmp_path / "out"
    raw = yaml.safe_load(TINY)
    module = STUDIES.get("prinz_flexer")
    ticks: list[str] = []
    name = module.run(raw, {}, tracking_uri=None, outputs=outputs, progress=ticks.append)
    assert name == "tiny000" and ticks == ["trained the victim", "attacked with fgsm", "attacked with cw"]
    exp_id = setup_tracking(name, None, outputs)
    assert mlflow.get_experiment(exp_id).tags[STUDY_TAG] == "prinz_flexer"
    runs = {r.data.tags["advaudio.kind"]: r for r in iter_runs(exp_id) if r.data.tags.get("advaudio.attack") != "fgsm"}
    cw = runs["attack"]
    record = load_record(cw.info.run_id)
    assert record is not None and record["mode"] == "all" and len(record["clip"]) == cw.data.metrics["attempts"]
    assert {"found_rate", "found_rate_ci_low", "accuracy", "noise_accuracy"} <= set(cw.data.metrics)
    assert cw.data.tags["mlflow.parentRunId"] == runs["train"].info.run_id

    before = {r.info.run_id for r in iter_runs(exp_id)}
    module.run(raw, {}, tracking_uri=None, outputs=outputs, progress=lambda _m: None)
    assert {r.info.run_id for r in iter_runs(exp_id)} == before, "a rerun must resume, not attack again"

    mlflow.set_tracking_uri("sqlite:///" + str(tmp_path / "elsewhere.db"))  # the report sets its own store
    assert main(["report", name, "--outputs", str(outputs)]) == 0
    reports = outputs / "reports" / name
    with open(reports / "table_1.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["row"] for r in rows] == ["clean", "fgsm", "cw"]
    with open(reports / "pairs_cw.csv") as fh:
        cells = list(csv.DictReader(fh))
    assert sum(int(c["attempts"]) for c in cells) == len(record["clip"])
    assert all(c["source"] != c["target"] for c in cells)
    assert (reports / "pairs_cw.png").stat().st_size > 0 and (reports / "table_2_matched_noise.md").exists()
    # the cw row recomputed by hand from its per-attempt record: found / attempts, accuracy (the adversarial
    # prediction where found, else the clean one), mean SNR of the found examples
    clip, success = record["clip"], record["success"]
    final = [a if hit else record["clean_pred"][c] for a, hit, c in zip(record["adv_pred"], success, clip)]
    accuracy = sum(p == record["labels"][c] for p, c in zip(final, clip)) / len(clip)
    snrs = [v for v, hit in zip(record["snr_db"], success) if hit and math.isfinite(v)]
    cw_row = next(r for r in rows if r["row"] == "cw")
    assert cw_row["found / attempts"].startswith(f"{sum(success)}/{len(clip)} = "), cw_row
    assert cw_row["accuracy"].startswith(f"{accuracy:.3f}"), (cw_row, accuracy)
    snr_cell = f"{sum(snrs) / len(snrs):.2f}" if snrs else "-"
    assert cw_row["SNR mean (dB)"].startswith(snr_cell), (cw_row, snrs)
    text = module.report(name, None, outputs)
    assert "Table 1 (Prinz & Flexer's Table 1)" in text and cw_row["found / attempts"] in text
