"""Quality scores of every waveform example of an attack run (evaluation.harness ``quality``, issue 20 item 3):
per clip in the record, means with intervals in the summary, the ensemble taking the deciding attack's scores.

Oracles: the ``pesq`` and ``pystoi`` packages and :func:`attacks.psychoacoustic.perceptual_distance` on each
adversarial example the harness kept.
"""
from __future__ import annotations

import importlib.util
import math
from dataclasses import replace

import numpy as np
import pytest
import soundfile as sf
import torch

from attacks.base import create_attack
from attacks.perceptual import stft_setting
from attacks.psychoacoustic import perceptual_distance
from evaluation.ensemble import ensemble
from evaluation.harness import evaluate_attack, from_record, to_record
from evaluation.intervals import summary_intervals
from evaluation.quality import SCORES
from tests.conftest import needs
from tests.tiny import CLASS_NAMES, SAMPLE_RATE, TinyLogSpec, TinyNet, tones, trained_victim
from victims.victim import Victim

HAS_PESQ = needs("pesq (the audio-quality extra)", importlib.util.find_spec("pesq") is not None)
HAS_STOI = needs("pystoi (the audio-quality extra)", importlib.util.find_spec("pystoi") is not None)


def wave_attack(name: str = "pgd", **kw: object):
    return create_attack(name, domain="waveform", norm="l2", **kw)


def run(victim: Victim, waves: torch.Tensor, labels: torch.Tensor, quality: bool = True, **kw: object):
    settings = dict(eps_max=2.0, n_budgets=4, n_bisect=2, quality=quality, name="pgd_l2")
    settings.update(kw)
    attack = settings.pop("attack", None) or wave_attack(steps=10)
    return evaluate_attack(victim, attack, waves, labels, **settings)


@pytest.mark.timeout(120)
def test_each_broken_clip_is_scored_and_the_rest_say_why() -> None:
    victim = trained_victim(steps=5)
    waves, labels = tones(4, seed=3)
    ev = run(victim, waves, labels)
    broken = ev.success
    assert broken.any(), "the attack broke no clip"
    assert torch.equal(torch.isfinite(ev.perceptual_db), broken)
    n_fft, hop = stft_setting(SAMPLE_RATE)
    clean = waves[ev.base_index][broken]
    expected = perceptual_distance(clean.flatten(1).double(), ev.adversarial[broken].flatten(1).double(),
                                   SAMPLE_RATE, n_fft, hop)
    torch.testing.assert_close(ev.perceptual_db[broken], expected.double(), rtol=1e-4, atol=1e-3)
    # 800 Hz, 0.2 s: PESQ is defined at 8/16 kHz only; STOI needs ~0.4 s of sound; each reason counted per clip
    assert torch.isnan(ev.pesq).all() and torch.isnan(ev.stoi).all()
    assert sum(ev.quality_notes["pesq"].values()) == int(broken.sum())
    assert any("800 Hz" in why for why in ev.quality_notes["pesq"])
    within = ev.within_eps_max
    assert ev.summary["perceptual_db"] == pytest.approx(float(ev.perceptual_db[within].mean()))
    assert math.isnan(ev.summary["pesq"]) and math.isnan(ev.summary["stoi"])
    ci = summary_intervals(ev, n_boot=200)
    assert ci["perceptual_db_ci_low"] <= ev.summary["perceptual_db"] <= ci["perceptual_db_ci_high"]
    assert ci["snr_db_ci_low"] <= ev.summary["snr_db"] <= ci["snr_db_ci_high"]
    assert math.isnan(ci["pesq_ci_low"])

    back = from_record(to_record(ev))  # the per-clip record keeps every score and the reasons
    for name in SCORES:
        assert torch.equal(torch.isnan(getattr(back, name)), torch.isnan(getattr(ev, name)))
        torch.testing.assert_close(getattr(back, name).nan_to_num(), getattr(ev, name).nan_to_num())
    assert back.quality_notes == ev.quality_notes


@pytest.mark.timeout(120)
def test_without_quality_nothing_is_scored_and_old_records_still_load() -> None:
    victim = trained_victim(steps=5)
    waves, labels = tones(2, seed=3)
    ev = run(victim, waves, labels, quality=False)
    assert all(getattr(ev, name) is None for name in SCORES) and not ev.quality_notes
    assert not set(SCORES) & set(ev.summary)
    assert "perceptual_db_ci_low" not in summary_intervals(ev, n_boot=50)
    record = to_record(ev)
    for name in (*SCORES, "quality_notes"):
        record.pop(name)  # a record written before the scores existed
    assert from_record(record).perceptual_db is None


@pytest.mark.timeout(120)
def test_a_representation_attack_gets_no_scores() -> None:
    victim = trained_victim(steps=5)
    waves, labels = tones(2, seed=3)
    ev = run(victim, waves, labels, attack=create_attack("fgsm", norm="l2"), eps_max=12.0)
    assert ev.perceptual_db is None and "perceptual_db" not in ev.summary


@pytest.mark.timeout(120)
def test_the_worst_case_takes_the_scores_of_the_attack_that_decided() -> None:
    victim = trained_victim(steps=5)
    waves, labels = tones(4, seed=3)
    first = run(victim, waves, labels, attack=wave_attack(steps=20), name="pgd_l2")
    assert first.success.sum() >= 2
    wins = torch.zeros_like(first.success)
    wins[first.success.nonzero().flatten()[::2]] = True  # a second attack that finds half the broken clips first
    second = replace(first, attack="other", eps_star=torch.where(wins, first.eps_star / 2, first.eps_star * 2),
                     **{name: getattr(first, name) + 100.0 for name in SCORES})
    ens, found_by = ensemble([first, second], "worst")
    assert {"pgd_l2", "other"} <= set(found_by)
    for i, who in enumerate(found_by):
        if not who:
            assert math.isnan(float(ens.perceptual_db[i]))
            continue
        source = first if who == "pgd_l2" else second
        assert float(ens.perceptual_db[i]) == float(source.perceptual_db[i])


def fsdd_clips(fsdd_root, count: int, samples: int) -> torch.Tensor:
    names = sorted((fsdd_root / "recordings").glob("*_jackson_*.wav"))[:count]
    clips = []
    for path in names:
        wave, rate = sf.read(path)
        assert rate == 8000
        clip = np.zeros(samples)
        clip[:min(samples, len(wave))] = wave[:samples]
        clips.append(clip)
    return torch.tensor(np.stack(clips), dtype=torch.float32).unsqueeze(1)


@HAS_PESQ
@HAS_STOI
@pytest.mark.timeout(180)
def test_speech_examples_get_the_packages_pesq_and_stoi(fsdd_root) -> None:
    import pesq
    import pystoi

    torch.manual_seed(0)
    frontend = TinyLogSpec(8000, n_fft=256, hop=128)
    victim = Victim(frontend, TinyNet(len(CLASS_NAMES)), CLASS_NAMES, 4000).eval()
    waves = fsdd_clips(fsdd_root, 6, 4000)
    victim.normalizer.fit([frontend(waves)])
    with torch.no_grad():
        labels = victim(waves).argmax(dim=1)  # every clip in the base set: the attack must change the prediction
    ev = run(victim, waves, labels, eps_max=4.0)
    broken = ev.success.nonzero().flatten().tolist()
    assert broken, "the attack broke no clip"
    for i in broken:
        clean = waves[ev.base_index[i], 0].double().numpy()
        adversarial = ev.adversarial[i, 0].double().numpy()
        assert float(ev.pesq[i]) == pytest.approx(pesq.pesq(8000, clean, adversarial, "nb"), abs=1e-6)
        assert float(ev.stoi[i]) == pytest.approx(pystoi.stoi(clean, adversarial, 8000), abs=1e-6)
    assert not ev.quality_notes.get("pesq") and not ev.quality_notes.get("stoi")
    within = ev.within_eps_max
    if within.any():
        assert ev.summary["pesq"] == pytest.approx(float(ev.pesq[within].mean()))


@pytest.mark.timeout(120)
def test_the_least_and_the_most_audible_examples_are_the_ones_logged() -> None:
    from defense.attack_cell import shown_examples

    victim = trained_victim(steps=5)
    waves, labels = tones(4, seed=3)
    ev = run(victim, waves, labels)
    broken = ev.success.nonzero().flatten().tolist()
    distance = {i: float(ev.perceptual_db[i]) for i in broken}
    least, most = min(distance, key=distance.get), max(distance, key=distance.get)
    assert least != most
    assert shown_examples(ev, 2) == [(least, f"example_{least}_least_audible"), (most, f"example_{most}_most_audible")]
    assert shown_examples(ev, 1) == [(least, f"example_{least}_least_audible")]
    more = shown_examples(ev, 4)
    assert more[:2] == shown_examples(ev, 2) and [i for i, _ in more[2:]] == [i for i in broken if i not in
                                                                             (least, most)][:2]
    plain = run(victim, waves, labels, quality=False)
    assert shown_examples(plain, 2) == [(i, f"example_{i}") for i in plain.success.nonzero().flatten().tolist()[:2]]
    assert shown_examples(ev, 0) == []
