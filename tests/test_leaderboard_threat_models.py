"""The threat models of the data sets a user brings (ESC-50, UrbanSound8K, Speech Commands) on stand-ins written in
each release's own layout: each reads its data set's test split at its own rate and length with every class in it,
and a Speech Commands victim is benchmarked end to end under its threat model's own protocol (iterations capped)."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from defense.cli import main
from defense.config import CONFIG_ROOT, compose
from defense.dryrun_shrink import ATTACK_CAPS, lowered
from leaderboard.entry import read_entry
from leaderboard.threat_model import load_threat_model, threat_models
from training.data import load_splits
from training.data.standin import write_standin

BROUGHT = sorted(n for n in threat_models() if not n.startswith("fsdd_"))


def test_each_brought_data_set_has_both_waveform_threat_models() -> None:
    assert BROUGHT == [f"{d}_wave_{n}" for d in ("esc50", "speech_commands", "urbansound8k") for n in ("l2", "linf")]


@pytest.mark.timeout(120)
@pytest.mark.parametrize("name", BROUGHT)
def test_a_threat_model_reads_its_data_sets_test_split(name: str, tmp_path: Path) -> None:
    info = write_standin(load_threat_model(name).dataset, tmp_path / "data", 0.2)
    tm = load_threat_model(name, data_root=str(tmp_path / "data"))
    assert tm.config_hash == load_threat_model(name).config_hash  # where the data lie is no part of it
    test = load_splits({**tm.dataset, "cache_dir": str(tmp_path / "cache")}).test
    assert test.sample_rate == tm.dataset["sample_rate"]
    assert test.num_samples == round(tm.dataset["clip_seconds"] * tm.dataset["sample_rate"])
    assert sorted(set(test.labels.tolist())) == list(range(info.classes))  # every class has a test clip


@pytest.mark.timeout(300)
def test_a_speech_commands_victim_is_benchmarked_under_its_threat_model(tmp_path: Path) -> None:
    """The shipped protocol with its iteration counts capped as in a dry run (the threat model is a copy under its
    own name, so its hash is its own): the entry holds every test clip of the stand-in and its 35 words."""
    name = "speech_commands_wave_linf"
    raw = yaml.safe_load((CONFIG_ROOT / "threat_model" / f"{name}.yaml").read_text())
    raw["protocol"]["attacks"] = [lowered(a, ATTACK_CAPS) for a in raw["protocol"]["attacks"]]
    tm_path = tmp_path / f"{name}.yaml"
    tm_path.write_text(yaml.safe_dump(raw))
    data = tmp_path / "data"
    info = write_standin(load_threat_model(name).dataset, data, 0.2)
    cfg = compose("train", {"dataset": "speech_commands", "frontend": "stft_db_128", "victim": "averagepool_cnn",
                            "train": "demo", "dataset.root": str(data), "train.epochs": 1, "train.device": "cpu",
                            "dataset.cache_dir": str(tmp_path / "cache")})
    from defense.pipeline import train_from_config

    checkpoint = train_from_config(cfg, outputs=tmp_path / "out").checkpoint
    assert main(["benchmark", str(checkpoint), "--threat-model", str(tm_path), "--outputs", str(tmp_path / "out"),
                 "--data-root", str(data), "--entries", str(tmp_path / "entries"), "--name", "tiny",
                 "--no-progress"]) == 0
    entry = read_entry(tmp_path / "entries" / "tiny.json")
    assert entry["threat_model"]["name"] == name
    assert entry["card"]["data"]["classes"] == sorted(entry["card"]["data"]["classes"])
    assert len(entry["card"]["data"]["classes"]) == info.classes == 35
    assert entry["card"]["data"]["sample_rate"] == 16000
    clean, robust = (entry["metrics"][k]["value"] for k in ("clean_accuracy", "robust_accuracy"))
    assert 0 <= robust <= clean <= 1
