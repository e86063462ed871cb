"""Koerich et al.'s study: its configs load and validate, bad ones are one-line errors, and a tiny study runs
end to end (train, attack, reconstruct, log) with its tables rebuilt from MLflow alone."""
from __future__ import annotations

import copy
import csv
import math
from pathlib import Path
from typing import Any, Callable

import mlflow
import numpy as np
import pytest
import torch
import yaml

from evaluation.tracking import artifact_json, iter_runs, setup_tracking
from experiments.koerich import report, run
from experiments.koerich.config import load_study
from experiments.koerich.measure import RECORD, choose_recordings, db_view, reconstruct, record
from experiments.koerich.report import _pooled_sd, combine
from defense.config import load_option
from victims.frontends import FRONTENDS
from victims.registry import ConfigError
from victims.victim import build_victim

TINY = """
study: koerich
name: tiny003
dataset: gm_instruments
train: seed003
spectrogram_models:
  stft: {frontend: stft_db, victim: koerich_cnn2d}
  mel: {frontend: mel_db_seed003, victim: koerich_cnn2d}
waveform_model: {frontend: waveform, victim: abdoli_cnn1d}
attacks:
  fgsm: {name: fgsm, norm: linf, eps: 0.3}
  bim: {name: bim_b, norm: linf, eps: 0.3, abs_stepsize: 0.1, steps: 2}
evaluation: {batch_size: 16, griffin_lim_iters: 4, n_boot: 50, wavs: 1}
overrides:
  dataset.classes: [bass_drum, hi_hat, flute]
  dataset.clips_per_class: 4
  dataset.sample_rate: 8000
  dataset.clip_seconds: 0.25
  dataset.note_seconds: 0.5
  dataset.segment: true
  dataset.split.test_fraction: 0.5
  dataset.split.val_fraction: 0.2
  train.epochs: 1
  train.batch_size: 8
  train.patience: null
  spectrogram_models.stft.frontend.n_fft: 64
  spectrogram_models.stft.frontend.hop: 32
  spectrogram_models.mel.frontend.n_fft: 64
  spectrogram_models.mel.frontend.hop: 32
  spectrogram_models.mel.frontend.n_mels: 16
  spectrogram_models.stft.victim.dense: 16
  spectrogram_models.mel.victim.dense: 16
  waveform_model.victim.high_hz: 3800.0
"""


@pytest.mark.parametrize("name", ["koerich", "koerich_full"])
def test_shipped_configs_compose_and_validate(name: str) -> None:
    study = load_study(load_option("experiment", name))
    assert set(study.spectrogram_models) == {"stft", "mel"}
    assert {"fgsm", "bim"} <= set(study.attacks)  # the paper's: L-inf eps 0.3 on the dB spectrogram
    assert study.attacks["bim"] == {"name": "bim_b", "norm": "linf", "eps": 0.3, "abs_stepsize": 0.1, "steps": 10,
                                    "domain": "representation"}
    assert study.controls()["random_0.3"] == 0.3
    assert study.waveform_model["victim"]["backbone"] == "abdoli_cnn1d"
    if name == "koerich_full":  # the paper's GTZAN protocol: three track-level folds, 5 s windows, 75 % overlap
        assert study.folds() == [0, 1, 2] and study.dataset["name"] == "gtzan"
        assert study.dataset["segment"] and study.dataset["overlap"] == 0.75 and study.dataset["clip_seconds"] == 5.0
        assert study.dataset_for(2)["split"]["test_fold"] == 2
        assert study.spectrogram_models["stft"]["frontend"]["n_fft"] == 512
    else:
        assert study.folds() == [None]


def test_train_overrides_reach_every_model_and_model_keys_one() -> None:
    raw = yaml.safe_load(TINY)
    study = load_study(raw, {"train.epochs": 3, "waveform_model.train.lr": 0.5})
    assert all(m["train"]["epochs"] == 3 for m in [*study.spectrogram_models.values(), study.waveform_model])
    assert study.waveform_model["train"]["lr"] == 0.5 and study.spectrogram_models["stft"]["train"]["lr"] == 1.0


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def change(raw: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        node = raw
        for part in parents:
            node = node[part]
        node[last] = value
        for key in [k for k in raw["overrides"] if k.startswith(path + ".")]:  # keys of the replaced option
            del raw["overrides"][key]
    return change


@pytest.mark.parametrize("change, message", [
    (_set("spectrogram_models.stft.frontend", "cwt"), "front-end 'cwt' has no waveform inverse"),
    (_set("waveform_model.frontend", "stft_db"), "is not the raw waveform"),
    (_set("attacks.fgsm.domain", "waveform"), "Koerich et al. attack the spectrogram"),
    (_set("attacks.fgsm.name", "deepfool"), "untargeted fixed-budget"),
    (_set("attacks.fgsm.name", "fgsmm"), "did you mean 'fgsm'"),
    (_set("test_folds", [0, 1]), "test_folds needs dataset.split.method kfold"),
    (_set("evaluation.wavs", -1), "wavs >= 0"),
    (_set("spectrogram_models.stft.train", {"epoch": 2}), "no 'epoch' in the config"),
])
def test_bad_configs_are_one_line_errors(change: Callable[[dict[str, Any]], None], message: str) -> None:
    raw = yaml.safe_load(TINY)
    change(raw)
    with pytest.raises(ConfigError, match=message) as err:
        load_study(raw)
    assert "\n" not in str(err.value)


def test_bad_frontend_keyword_names_the_model() -> None:
    with pytest.raises(ConfigError, match="spectrogram_models.stft.frontend: stft_db needs n_fft >= 2"):
        load_study(yaml.safe_load(TINY), {"spectrogram_models.stft.frontend.n_fft": 1})


def test_unknown_override_key_is_named() -> None:
    with pytest.raises(ConfigError, match="unknown key 'dataset.clip_secs'"):
        load_study(yaml.safe_load(TINY), {"dataset.clip_secs": 1.0})


def test_db_view_shares_the_model_and_reads_decibels() -> None:
    victim = build_victim({"name": "stft_db", "n_fft": 64, "hop": 32}, {"backbone": "koerich_cnn2d", "dense": 8},
                          ["a", "b"], 8000, 800)
    victim.normalizer.mean.fill_(-40.0)
    victim.normalizer.std.fill_(7.0)
    victim.eval()
    wave = torch.randn(3, 1, 800) * 0.1
    view = db_view(victim).eval()
    assert torch.allclose(view.to_domain(wave, "representation"), victim.features(wave))
    assert torch.allclose(view(wave), victim(wave))
    lo, hi = victim.frontend.output_bounds()
    assert torch.allclose(view.bounds("representation").lower.flatten(), lo)
    assert torch.allclose(view.bounds("representation").upper.flatten(), hi)


def test_reconstruct_keeps_the_phase_for_stft() -> None:
    fe = FRONTENDS.create("stft_db", sample_rate=8000, n_fft=64, hop=32)
    t = torch.arange(800) / 8000
    wave = (0.3 * torch.sin(2 * math.pi * 440 * t)).view(1, 1, -1)
    rec = reconstruct(fe, fe(wave) + 20 * math.log10(2), wave, griffin_lim_iters=4)  # +6.02 dB: twice the amplitude
    assert torch.allclose(rec, 2 * wave.double(), atol=1e-6)
    with pytest.raises(ConfigError, match="no waveform inverse"):
        reconstruct(FRONTENDS.create("waveform", sample_rate=8000), wave.unsqueeze(2), wave, 4)


def test_choose_recordings_keeps_whole_recordings_balanced() -> None:
    groups = torch.tensor([0, 0, 1, 1, 1, 2, 3, 3, 4, 5])
    labels = torch.tensor([0, 0, 0, 0, 0, 0, 1, 1, 1, 1])
    chosen = choose_recordings(groups, labels, 2, seed=0)
    picked = groups[chosen].unique()
    assert len(picked) == 2 and set(labels[chosen].tolist()) == {0, 1}  # one recording of each class
    assert all(int((groups[chosen] == g).sum()) == int((groups == g).sum()) for g in picked)
    assert torch.equal(choose_recordings(groups, labels, None, 0), torch.arange(10))


def test_table_cells_combine_folds_by_hand() -> None:
    one = combine([(np.array([1.0, 0.0]), np.array([1.0, 1.0]))], n_boot=1000, seed=3, level=0.95)
    assert (one.value, one.low, one.high, one.folds) == (0.5, 0.0, 1.0, 1)
    assert one.text(100) == "50.0 [0.0, 100.0]"
    folds = [(np.array([1.0, 0.0]), np.array([1.0, 1.0])), (np.array([3.0, 4.0]), np.array([5.0, 5.0])),
             (np.array([6.0]), np.array([10.0]))]  # fold values 0.5, 0.7, 0.6
    three = combine(folds, n_boot=10, seed=0, level=0.95)
    half = 4.302652729911275 * 0.1 / math.sqrt(3)  # t(0.975, 2) · SD / √3
    assert three.value == pytest.approx(0.6) and three.sd == pytest.approx(0.1)
    assert (three.low, three.high) == (pytest.approx(0.6 - half), pytest.approx(0.6 + half))
    assert three.text(100) == "60.0 ± 10.0 [35.2, 84.8] (3 folds)"


def test_snr_sd_pools_segments_over_folds() -> None:
    fold_a = {"n": [2.0], "sum": [30.0], "sq": [500.0]}  # segments at 10 and 20 dB
    fold_b = {"n": [1.0], "sum": [30.0], "sq": [900.0]}  # one segment at 30 dB
    assert _pooled_sd([fold_a, fold_b]) == pytest.approx(10.0)  # SD of 10, 20, 30
    assert math.isnan(_pooled_sd([fold_b]))



def test_record_counts_transfer_and_snr_by_hand() -> None:
    groups, labels = np.array([0, 0, 1]), np.array([0, 0, 1])
    p = {"2d/clean": [[0.9, 0.1], [0.8, 0.2], [0.3, 0.7]],  # all right
         "2d/fgsm": [[0.2, 0.8], [0.6, 0.4], [0.6, 0.4]],   # segments 0 and 2 fooled
         "1d/recon": [[0.7, 0.3], [0.7, 0.3], [0.6, 0.4]],  # segment 2 already wrong on the clean reconstruction
         "1d/fgsm": [[0.4, 0.6], [0.7, 0.3], [0.6, 0.4]]}
    rec = record(groups, labels, {k: np.array(v) for k, v in p.items()}, {"fgsm": np.array([10.0, math.inf, 30.0])})
    assert rec["recordings"] == {"ids": [0, 1], "labels": [0, 1], "segments": [2, 1]}
    assert rec["counts"]["2d/fgsm"] == {"segment": [1.0, 0.0], "vote": [0.0, 0.0], "sum": [0.0, 0.0]}
    assert rec["counts"]["2d/clean"] == {"segment": [2.0, 1.0], "vote": [1.0, 1.0], "sum": [1.0, 1.0]}
    assert rec["transfer"] == {"fgsm": {"num": [1.0, 0.0], "den": [1.0, 0.0]}}  # only segment 0 is in the base
    assert rec["snr"] == {"fgsm": {"n": [1.0, 1.0], "sum": [10.0, 30.0], "sq": [100.0, 900.0]}}

@pytest.mark.slow
@pytest.mark.timeout(600)
def test_tiny_study_end_to_end_and_report_from_mlflow(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ADVAUDIO_CACHE", str(tmp_path / "cache"))
    raw, outputs, uri = yaml.safe_load(TINY), tmp_path / "out", f"sqlite:///{tmp_path / 'mlflow.db'}"
    ticks: list[str] = []
    name = run.run(copy.deepcopy(raw), {}, tracking_uri=uri, outputs=outputs, progress=ticks.append)
    assert name == "tiny003" and len(ticks) == 6  # three models trained, three evaluations
    exp_id = setup_tracking(name, uri, outputs)
    evals = [r for r in iter_runs(exp_id) if r.data.tags.get("advaudio.kind") == "seed003_eval"]
    assert sorted(r.data.tags["advaudio.input"] for r in evals) == ["mel", "original", "stft"]
    stft = next(r for r in evals if r.data.tags["advaudio.input"] == "stft").data.metrics
    low, value, high = (stft[f"2d/bim.vote_accuracy{s}"] for s in ("_ci_low", "", "_ci_high"))
    assert 0 <= low <= value <= high <= 1
    assert stft["snr_db.roundtrip"] > 60  # kept-phase iSTFT of the clean spectrogram is exact up to rounding
    assert stft["snr_db.bim"] < stft["snr_db.roundtrip"]

    text = report.report(name, uri, outputs)  # a second process would see only what MLflow holds
    for table in ("Table III", "Table IV", "Table V", "Table VI", "Table VII", "Table VIII"):
        assert table in text
    rows = list(csv.DictReader((outputs / "reports" / name / "table_V.csv").open()))
    expected = [(i, a) for i in ("mel", "stft") for a in ("fgsm", "bim", "random_0.3")]  # random: the control
    assert [(r["Input"], r["Attack"]) for r in rows] == expected
    client = mlflow.MlflowClient(uri)
    data = {r.data.tags["advaudio.input"]: artifact_json(r.info.run_id, RECORD, client)["data"] for r in evals}
    for row in rows:  # the 2D CNN's attacked accuracy by hand: correct segments / segments, votes / recordings
        d = data[row["Input"]]
        counts, n_rec = d["counts"][f"2d/{row['Attack']}"], len(d["recordings"]["ids"])
        by_hand = {"Segments": 100 * sum(counts["segment"]) / sum(d["recordings"]["segments"]),
                   "MV": 100 * sum(counts["vote"]) / n_rec, "SR": 100 * sum(counts["sum"]) / n_rec}
        for column, value in by_hand.items():
            assert float(row[column]) == pytest.approx(value, rel=1e-12), (row, column)
            assert float(row[f"{column}_low"]) <= float(row[column]) <= float(row[f"{column}_high"]), (row, column)

    again = run.run(copy.deepcopy(raw), {}, tracking_uri=uri, outputs=outputs, progress=ticks.append)
    assert again == name
    rerun = [r for r in iter_runs(exp_id) if r.data.tags.get("advaudio.kind") == "seed003_eval"]
    assert len(rerun) == 3  # finished evaluations are reused, not repeated
