"""Threat models and ``advaudio benchmark`` (issue 21 items 1-2): entries that validate, reproduce and refuse.

One tiny FSDD model (AveragePoolCNN on a 128-point STFT, 2 epochs on a fifth of the training split) is benchmarked
under a tiny threat model (12 clips, short attacks); the checks are hand-computable from the entry's own per-clip
ε* (robust accuracy = share of clips correct and not broken within the budget), exact identities (an external
adapter around the same network with its classes reversed gives the same ε* per clip; ε_r of a model against itself
is 1) and the one-line refusals of bad input.
"""
from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from mlflow.tracking import MlflowClient

from defense.cli import main
from defense.config import load_option
from leaderboard.entry import EntryError, load_entry, read_entry, schema_problem
from leaderboard.threat_model import load_threat_model, threat_models
from training.checkpoints import save_atomic, victim_state
from victims.victim import build_victim

TINY = {"name": "tiny_tm", "version": 1,
        "dataset": {"option": "fsdd", "overrides": {"clip_seconds": 0.5, "sample_rate": 8000}},
        "split": "test", "domain": "waveform", "norm": "l2", "budget": 0.25, "search_eps_max": 2.0,
        "protocol": {"n_clips": 12, "seed": 0, "n_budgets": 4, "eps_rtol": 0.1, "batch_size": 12, "n_boot": 200,
                     "confidence": 0.95,
                     "attacks": [{"option": "apgd_ce", "overrides": {"domain": "waveform", "steps": 5}},
                                 {"option": "fmn_l2", "name": "fmn",
                                  "overrides": {"domain": "waveform", "max_stepsize": 0.1, "steps": 10}},
                                 {"option": "noise", "overrides": {"snr_db": None}}]}}
EXTERNAL_MODULE = '''
import torch
from training.checkpoints import load_victim

class Reversed(torch.nn.Module):
    """Our victim as an external model: (N, samples) -> logits, classes in reverse order."""
    def __init__(self, path):
        super().__init__()
        self.victim = load_victim(path)
        self.sample_rate = self.victim.sample_rate
        self.class_names = list(reversed(self.victim.class_names))
    def forward(self, wave):
        return self.victim(wave.unsqueeze(1)).flip(1)

class Cube(torch.nn.Module):
    sample_rate = 8000
    class_names = [str(i) for i in range(10)]
    def forward(self, wave):
        return wave[:, :20].reshape(len(wave), 10, 2)

def reversed_victim(path):
    return Reversed(path)

def cube(path):
    return Cube()
'''


def tiny_threat_model(folder: Path, root: Path, **changes: object) -> Path:
    raw = json.loads(json.dumps(TINY))
    raw["dataset"]["overrides"]["root"] = str(root)
    raw.update(changes)
    path = folder / "tiny_tm.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def _tiny_victim(tmp_path_factory: pytest.TempPathFactory, folder: str, **overrides: str) -> Path:
    """A tiny FSDD victim (AveragePoolCNN on a 128-point STFT, 2 epochs on a fifth of the training split) trained
    through the pipeline with ``overrides`` (checkpoint and MLflow training run under a new ``folder``)."""
    from tests.conftest import FSDD_ROOT
    from defense.config import compose
    from defense.pipeline import train_from_config

    if not (FSDD_ROOT / "recordings").is_dir():
        pytest.skip(f"FSDD not found at {FSDD_ROOT}")
    cfg = compose("train", {"dataset": "fsdd", "frontend": "stft_db_128", "victim": "averagepool_cnn", "train": "demo",
                            "dataset.root": str(FSDD_ROOT), "dataset.clip_seconds": 0.5,
                            "dataset.split.train_fraction": 0.2, "train.epochs": 2, "train.device": "cpu",
                            **overrides})
    return train_from_config(cfg, outputs=tmp_path_factory.mktemp(folder)).checkpoint


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny victim, trained clean."""
    return _tiny_victim(tmp_path_factory, "bench")


def bench(checkpoint: Path, tm: Path, outputs: Path, *extra: str) -> int:
    return main(["benchmark", str(checkpoint), "--threat-model", str(tm), "--outputs", str(outputs),
                 "--no-progress", *extra])


def one_error(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith("advaudio benchmark: error: ") and "\n" not in err, err
    return err


@pytest.mark.timeout(30)
def test_every_threat_model_resolves_and_its_hash_is_its_content(tmp_path: Path) -> None:
    names = threat_models()
    assert {"fsdd_wave_linf", "fsdd_wave_l2", "fsdd_rep_l2", "fsdd_perceptual"} <= set(names)
    for name in names:
        tm = load_threat_model(name)
        assert len(tm.config_hash) == 12 and int(tm.config_hash, 16) >= 0
        assert tm.budget <= tm.search_eps_max and tm.attacks
    assert load_threat_model("fsdd_wave_l2", data_root="/elsewhere").config_hash == \
        load_threat_model("fsdd_wave_l2").config_hash  # where the data lie is no part of it
    one = load_threat_model(str(tiny_threat_model(tmp_path, tmp_path)))
    other = load_threat_model(str(tiny_threat_model(tmp_path, tmp_path, budget=0.3)))
    assert one.config_hash != other.config_hash
    bad = dict(TINY, norm="linf")  # the L2 attacks do not fit an L-inf threat model
    (tmp_path / "bad_tm.yaml").write_text(yaml.safe_dump({**bad, "name": "bad_tm"}))
    with pytest.raises(Exception, match="attack 'apgd_ce' is waveform/l2, the threat model waveform/linf"):
        load_threat_model(str(tmp_path / "bad_tm.yaml"))


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_entry_validates_reproduces_and_its_metrics_follow_from_its_clips(
        trained: Path, fsdd_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    tm = tiny_threat_model(tmp_path, fsdd_root)
    outputs = trained.parent.parent
    assert bench(trained, tm, outputs, "--name", "first", "--entries", str(tmp_path / "a")) == 0
    assert bench(trained, tm, outputs, "--name", "first", "--entries", str(tmp_path / "b")) == 0
    a = read_entry(tmp_path / "a" / "first.json")
    b = read_entry(tmp_path / "b" / "first.json")
    assert schema_problem(a) is None
    for entry in (a, b):
        entry.pop("created")
        entry["evaluation"].pop("wall_time_s")
        entry["evaluation"].pop("mlflow_run_id")
    assert a == b  # seeded: the same entry but for its time and run
    stars = a["evaluation"]["eps_star_per_clip"]["eps_star"]
    n, budget = len(stars), a["evaluation"]["budget"]
    base = [math.inf if s == "inf" else s for s in stars if s is not None]
    assert n == a["evaluation"]["n_clips"] == 12 and 0 < len(base) < n  # the tiny model is right on some clips
    metrics = a["metrics"]
    assert metrics["clean_accuracy"]["value"] == pytest.approx(len(base) / n)
    assert metrics["robust_accuracy"]["value"] == pytest.approx(sum(s > budget for s in base) / n)
    median = float(np.median(base))
    assert metrics["eps_star_median"]["value"] == (pytest.approx(median) if math.isfinite(median) else None)
    assert all(acc >= metrics["robust_accuracy"]["value"]
               for acc in a["evaluation"]["per_attack_robust_accuracy"].values())  # the worst case is the minimum
    assert metrics["eps_r"] is None and metrics["certified_accuracy"] is None
    assert a["card"]["architecture"] == "averagepool_cnn" and a["card"]["objective"] == "clean"
    assert a["card"]["config_hash"] == trained.name.split(".")[0] and a["card"]["training_time_s"] > 0
    assert a["card"]["parameters"] > 0 and a["evaluation"]["budget_snr_db"] > 0
    run = MlflowClient(f"sqlite:///{outputs / 'mlflow.db'}").get_run(b_run := read_entry(
        tmp_path / "b" / "first.json")["evaluation"]["mlflow_run_id"])
    assert run.data.metrics["robust_accuracy"] == pytest.approx(metrics["robust_accuracy"]["value"])
    assert "entry.json" in {f.path for f in MlflowClient(f"sqlite:///{outputs / 'mlflow.db'}").list_artifacts(b_run)}
    capsys.readouterr()

    # eps_r of the model against itself, from its entry: 1 exactly
    assert bench(trained, tm, outputs, "--name", "self", "--entries", str(tmp_path / "a"),
                 "--reference", str(tmp_path / "b" / "first.json")) == 0
    eps_r = read_entry(tmp_path / "a" / "self.json")["metrics"]["eps_r"]
    assert eps_r["value"] == pytest.approx(1.0) and eps_r["reference"] == "first"

    # the threat model changes: its entries are refused in one line, by load_entry and as a reference
    changed = tiny_threat_model(tmp_path, fsdd_root, budget=0.3)
    with pytest.raises(EntryError, match="current hash is") as info:
        load_entry(tmp_path / "a" / "first.json", load_threat_model(str(changed)).config_hash)
    assert "\n" not in str(info.value)
    capsys.readouterr()
    assert bench(trained, changed, outputs, "--name", "late", "--entries", str(tmp_path / "a"),
                 "--reference", str(tmp_path / "b" / "first.json")) == 2
    assert "current hash is" in one_error(capsys)
    assert not (tmp_path / "a" / "late.json").exists()


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_an_external_module_with_reordered_classes_gets_the_same_clips(
        trained: Path, fsdd_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "bench_external_mod.py").write_text(EXTERNAL_MODULE)
    monkeypatch.chdir(tmp_path)  # the adapter imports from the current folder
    monkeypatch.setattr(sys, "path", list(sys.path))
    tm = tiny_threat_model(tmp_path, fsdd_root)
    outputs = trained.parent.parent
    entries = tmp_path / "entries"
    assert bench(trained, tm, outputs, "--name", "native", "--entries", str(entries)) == 0
    assert bench(trained, tm, outputs, "--name", "external", "--entries", str(entries),
                 "--external", "bench_external_mod:reversed_victim") == 0
    native = read_entry(entries / "native.json")
    external = read_entry(entries / "external.json")
    assert external["model"]["source"] == "external" and external["card"]["representation"] == "waveform"
    assert external["card"]["parameters"] == native["card"]["parameters"]
    got, want = (e["evaluation"]["eps_star_per_clip"] for e in (external, native))
    assert got["labels"] == want["labels"]
    assert [s is None for s in got["eps_star"]] == [s is None for s in want["eps_star"]]
    for g, w in zip(got["eps_star"], want["eps_star"]):
        if isinstance(w, float):
            assert g == pytest.approx(w, rel=1e-4)
    assert external["metrics"]["clean_accuracy"] == native["metrics"]["clean_accuracy"]

    capsys.readouterr()  # an external module whose output is not (N, classes) logits: one line, nothing written
    assert bench(trained, tm, outputs, "--name", "cube", "--entries", str(entries),
                 "--external", "bench_external_mod:cube") == 2
    assert "must return (N, classes) logits" in one_error(capsys)
    assert not (entries / "cube.json").exists()
    assert bench(trained, tm, outputs, "--name", "rep", "--entries", str(entries), "--external",
                 "bench_external_mod:reversed_victim", "--threat-model", "fsdd_rep_l2", "--data-root", str(fsdd_root)) == 2
    assert "has none" in one_error(capsys)


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_bad_input_is_one_line_and_writes_nothing(fsdd_root: Path, tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    tm = tiny_threat_model(tmp_path, fsdd_root)
    entries = tmp_path / "entries"
    three = build_victim(load_option("frontend", "stft_db_128"), load_option("victim", "averagepool_cnn"),
                         ["zero", "one", "two"], 8000, 4000)  # FSDD's clips, another class set
    other = save_atomic(victim_state(three), tmp_path / "three.victim.pt")
    assert bench(other, tm, tmp_path / "out", "--entries", str(entries)) == 2
    assert "threat model tiny_tm's data (fsdd) has the classes" in one_error(capsys)

    malformed = tmp_path / "malformed.json"
    malformed.write_text('{"schema_version": 1,')
    with pytest.raises(EntryError, match="is not valid JSON"):
        load_entry(malformed)
    assert bench(other, tm, tmp_path / "out", "--entries", str(entries), "--reference", str(malformed)) == 2
    assert "is not valid JSON" in one_error(capsys)
    violating = tmp_path / "violating.json"
    violating.write_text(json.dumps({"schema_version": 1, "threat_model": {"name": "tiny_tm", "version": 0,
                                                                           "config_hash": "0" * 12}}))
    with pytest.raises(EntryError, match="violates entry.schema.json, field") as info:
        load_entry(violating)
    assert "\n" not in str(info.value)
    assert not entries.exists() or not any(entries.rglob("*.json"))
    assert torch.load(other, weights_only=True)["spec"]["class_names"] != [str(i) for i in range(10)]


@pytest.fixture(scope="module")
def smoothed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny victim trained with Gaussian noise on the waveform (``smooth_wave``, σ 0.01): a smoothed model."""
    return _tiny_victim(tmp_path_factory, "bench_smoothed", defense="smooth_wave")


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_a_smoothed_model_is_certified_at_the_budget_and_l_inf_through_its_l2_ball(
        smoothed: Path, fsdd_root: Path, tmp_path: Path) -> None:
    """Certified accuracy at the budget (Cohen et al. 2019's CERTIFY, seeded). Oracles: no clip certifies beyond
    σ·Φ⁻¹(α^(1/n)) (all n draws of the top class: Clopper-Pearson's lower bound is α^(1/n)), so a budget above it
    certifies exactly 0 with Wilson's upper bound z²/(n + z²); an L∞ budget ε is certified through the L2 ball of
    radius ε·√d (d samples), so it certifies what an L2 budget of ε·√d does on the same clips and seed."""
    from scipy.stats import norm

    outputs, entries, d = smoothed.parent.parent, tmp_path / "entries", 4000  # 0.5 s at 8 kHz
    sigma, n, alpha = 0.01, 100, 0.001  # smooth_wave's σ; CERTIFY's settings (the oracles hold for any n)
    one_step = [{"option": "apgd_ce", "overrides": {"domain": "waveform", "steps": 1}}]  # attacks are not checked here
    protocol = {**TINY["protocol"], "n_budgets": 2, "attacks": one_step, "certify_n0": 25, "certify_n": n,
                "certify_alpha": alpha}
    largest = float(sigma * norm.ppf(alpha ** (1 / n)))
    linf_attacks = [{"option": "apgd_ce_linf", "overrides": {"domain": "waveform", "steps": 1}}]
    eps = 0.2 * largest / math.sqrt(d)
    cases = {"beyond": dict(budget=1.5 * largest, protocol=protocol), "l2": dict(budget=eps * math.sqrt(d),
                                                                               protocol=protocol),
             "linf": dict(budget=eps, norm="linf", search_eps_max=0.05, protocol={**protocol, "attacks": linf_attacks})}
    got = {}
    for case, changes in cases.items():
        folder = tmp_path / case
        folder.mkdir()
        assert bench(smoothed, tiny_threat_model(folder, fsdd_root, **changes), outputs, "--name", case,
                     "--entries", str(entries / case)) == 0
        got[case] = read_entry(entries / case / f"{case}.json")["metrics"]["certified_accuracy"]
    z = norm.ppf(0.975)
    assert got["beyond"]["value"] == 0.0 and got["beyond"]["low"] == pytest.approx(0.0, abs=1e-12)
    assert got["beyond"]["high"] == pytest.approx(z ** 2 / (12 + z ** 2), rel=1e-9)
    assert got["linf"] == got["l2"]
    assert 0 < got["l2"]["value"] and got["l2"]["low"] <= got["l2"]["value"] <= got["l2"]["high"]  # not 0 == 0


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_a_model_behind_a_transform_is_judged_through_it(trained: Path, fsdd_root: Path, tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    """``--transform median_3`` deploys the model behind a 3×3 median filter of its spectrogram: the card names
    it, and which clips the entry counts correct is what scipy's median filter (``mode="nearest"``) in front of the
    model predicts. A training defense as a transform is one line, and nothing is written."""
    import scipy.ndimage

    from evaluation.selection import select_examples
    from training.checkpoints import load_victim
    from training.data import load_splits

    tm_path = tiny_threat_model(tmp_path, fsdd_root)
    entries = tmp_path / "entries"
    assert bench(trained, tm_path, trained.parent.parent, "--name", "median", "--entries", str(entries),
                 "--transform", "median_3") == 0
    entry = read_entry(entries / "median.json")
    assert entry["card"]["objective_settings"]["input_transform"]["option"] == "median_3"
    tm = load_threat_model(str(tm_path))
    waves, labels = select_examples(load_splits(tm.dataset).test, tm.protocol.n_clips, tm.protocol.seed)
    victim = load_victim(trained).eval()
    with torch.no_grad():
        rep = victim.to_domain(waves, "representation")
        filtered = torch.stack([torch.from_numpy(scipy.ndimage.median_filter(r[0].numpy(), size=3, mode="nearest"))
                                for r in rep]).unsqueeze(1)
        correct = (victim.logits_fn("representation")(filtered).argmax(1) == labels).tolist()
    assert entry["evaluation"]["eps_star_per_clip"]["labels"] == labels.tolist()
    assert [s is not None for s in entry["evaluation"]["eps_star_per_clip"]["eps_star"]] == correct

    capsys.readouterr()
    assert bench(trained, tm_path, trained.parent.parent, "--name", "pgd", "--entries", str(entries),
                 "--transform", "pgd_at") == 2
    assert "is a training defense" in one_error(capsys)
    assert not (entries / "pgd.json").exists()
