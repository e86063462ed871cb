"""Inference-time defenses in a grid (issue 11): input transforms wrap the original model, randomized smoothing
trains with noise and is certified, both are attacked naively and adaptively, and the report's comparison table
shows every defense side by side; a rerun resumes without duplicating a run."""
from __future__ import annotations

import math
import re
from pathlib import Path

import pytest
import torch
from mlflow.tracking import MlflowClient

from defense.grid import load_grid
from defense.inference import accuracy, deployed
from defense.runner import count_steps, run_grid
from evaluation.defense_table import defense_comparison
from evaluation.harness import from_record
from evaluation.report import format_tables
from evaluation.report_data import collect
from evaluation.report_listening import listening_table
from evaluation.tracking import artifact_json, downloaded, iter_runs, load_record, setup_tracking
from tiny_configs import TINY
from training.checkpoints import load_victim
from training.data import load_splits

pytestmark = pytest.mark.slow

GRID = (TINY.replace("name: tiny", "name: tinydef")
        .replace("victim: [resnet56]", "victim: [averagepool_cnn]")
        .replace("defense: [none, fgsm_mix]", "defense: [none, smooth_wave, quantize_8bit, noise_wave, lowpass_3k]")
        .replace("attack: [fgsm, deepfool_l2]", "attack: [bim_a, noise]")
        .replace("  fgsm: {domain: representation, norm: l2}\n  deepfool_l2: {steps: 20}\n",
                 "  bim_a: {domain: waveform, steps: 5, confidence: null}\n  noise: {snr_db: null}\n"
                 "adaptive: {eot_samples: 4}\n")
        .replace("  eps_max: {representation: {l2: 3.0}}\n  search_eps_max: {representation: {l2: 12.0}}\n",
                 "  eps_max: {waveform: {l2: 0.5}}\n  search_eps_max: {waveform: {l2: 2.0}}\n  certify_n0: 20\n"
                 "  certify_n: 100\n  monotone_sample: 4\n  over_the_air: room\n  over_the_air_draws: 4\n")
        .replace("  dataset.clips_per_class: 6", "  dataset.clips_per_class: 8")
        .replace("  n_examples: 6", "  n_examples: 8"))


def _runs(outputs: Path) -> list:
    return list(iter_runs(setup_tracking("tinydef", None, outputs)))


def _tag(run, name: str) -> str:  # type: ignore[no-untyped-def]
    return run.data.tags.get(f"advaudio.{name}", "")


def test_transforms_and_smoothing_are_attacked_naively_and_adaptively(tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ADVAUDIO_CACHE", str(tmp_path / "cache"))
    grid_file = tmp_path / "tinydef.yaml"
    grid_file.write_text(GRID)
    grid = load_grid(grid_file)
    outputs = tmp_path / "out"
    ticks: list[str] = []
    run_grid(grid, outputs=outputs, progress=lambda message, advance=True: ticks.append(message) if advance else None)
    # 5 models; bim_a naive on all, adaptive on quantize (BPDA), noise and smoothing (EoT); noise naive only
    assert len(ticks) == count_steps(grid) == 5 + 5 + 3 + 5

    runs = _runs(outputs)
    kinds = {(_tag(r, "kind"), _tag(r, "defense")) for r in runs}
    assert {("train", "none"), ("train", "smooth_wave"), ("defend", "quantize_8bit"), ("defend", "noise_wave"),
            ("defend", "lowpass_3k")} <= kinds
    attacks = {(_tag(r, "defense"), _tag(r, "attack"), _tag(r, "mode")): r for r in runs if _tag(r, "kind") == "attack"}
    for defense in ("smooth_wave", "quantize_8bit", "noise_wave"):
        assert {(defense, "bim_a", "naive"), (defense, "bim_a", "adaptive"), (defense, "noise", "naive")} <= set(attacks)
        assert (defense, "noise", "adaptive") not in attacks  # a baseline has no adaptive variant
    assert (("lowpass_3k", "bim_a", "naive") in attacks and ("lowpass_3k", "bim_a", "adaptive") not in attacks)
    assert ("none", "bim_a", "") in attacks
    # a waveform attack's examples carry their quality: per clip in the record, means with intervals, a figure
    plain = attacks[("none", "bim_a", "")]
    plain_record = load_record(plain.info.run_id)
    scored = [v for v, star in zip(plain_record["perceptual_db"], plain_record["eps_star"]) if math.isfinite(star)]
    assert scored and all(math.isfinite(v) for v in scored)
    metrics = plain.data.metrics
    within = [v for v, star in zip(plain_record["perceptual_db"], plain_record["eps_star"])
              if star <= plain_record["eps_max"]]
    assert metrics["perceptual_db"] == pytest.approx(sum(within) / len(within))
    if len(within) >= 2:  # an interval needs two clips
        assert metrics["perceptual_db_ci_low"] <= metrics["perceptual_db"] <= metrics["perceptual_db_ci_high"]
    assert "plots/quality.png" in {a.path for a in MlflowClient().list_artifacts(plain.info.run_id, "plots")}
    # and their share of room draws still fooling the model, beside the clean accuracy through the same rooms
    ota = artifact_json(plain.info.run_id, "over_the_air.json")
    assert ota["draws"] == 4 and len(ota["fooled"]) == len(ota["correct"]) == len(plain_record["labels"])
    broken_clips = [f for f in ota["fooled"] if f == f]
    assert len(broken_clips) == metrics["ota_broken"] == len(scored)
    assert metrics["ota_success"] == pytest.approx(sum(broken_clips) / len(broken_clips))
    assert metrics["ota_clean_accuracy_low"] <= metrics["ota_clean_accuracy"] <= metrics["ota_clean_accuracy_high"]
    # Table IV of the report shows them: one row per waveform attack run that scored its examples
    listening = listening_table(collect("tinydef", n_boot=200))
    row = listening[(listening["defense"] == "none") & (listening["attack"] == "bim_a")].iloc[0]
    assert row["over the air (%)"].startswith(f"{100 * metrics['ota_success']:.1f}")
    assert row["masked (%)"].startswith(f"{100 * metrics['masked_share']:.1f}")
    assert row["broken (n)"] == len(within)
    assert attacks[("quantize_8bit", "bim_a", "adaptive")].data.params["attack.bpda"] == "identity"
    assert attacks[("noise_wave", "bim_a", "adaptive")].data.params["attack.eot_samples"] == "4"

    # the quantiser's gradient is zero: the naive attack never moves, so it breaks nothing
    naive = from_record(load_record(attacks[("quantize_8bit", "bim_a", "naive")].info.run_id))
    assert naive.eps_star.numel() > 0 and bool(torch.isinf(naive.eps_star).all())

    models = {_tag(r, "defense"): r for r in runs if _tag(r, "kind") in ("train", "defend")}
    for defense in ("smooth_wave", "quantize_8bit", "noise_wave"):
        assert "sanity.gradient_masking.bim_a" in models[defense].data.metrics
    assert "sanity.gradient_masking.bim_a" not in models["lowpass_3k"].data.metrics
    smooth = models["smooth_wave"].data.metrics
    artifacts = {a.path for a in MlflowClient().list_artifacts(models["smooth_wave"].info.run_id, "plots")}
    assert "plots/certified_accuracy.png" in artifacts
    for name in ("certified_auc", "smoothed_accuracy", "abstain_rate", "certified_accuracy.r0.125",
                 "certified_accuracy.r0.5_ci_high", "sanity.certified_radius.bim_a"):
        assert name in smooth and math.isfinite(smooth[name]), name
        if not name.startswith("sanity.") and not name.endswith("_ci_high"):
            assert smooth[f"{name}_ci_low"] <= smooth[name] <= smooth[f"{name}_ci_high"], name
    record = artifact_json(models["smooth_wave"].info.run_id, "certify.json")
    assert len(record["pred"]) == len(record["radius"]) == naive.labels.numel() and record["n"] == 100

    # a transform's run holds the deployed model's test accuracy: the original wrapped in the transform
    original = _model(models["none"])
    test = load_splits(grid.cell_config("gm_instruments", "stft_db_small", "averagepool_cnn", "none")["dataset"]).test
    expected = accuracy(deployed(original, grid.defense_config("lowpass_3k")), test.waves, test.labels, 8, 0)
    assert models["lowpass_3k"].data.metrics["test_accuracy"] == pytest.approx(expected, abs=1e-12)

    data = collect("tinydef", n_boot=200)
    table = defense_comparison(data)
    rows = {(r["attacks"], r["defense"]): [] for _, r in table.iterrows()}
    for _, r in table.iterrows():
        rows[(r["attacks"], r["defense"])].append(r["evaluation"])
    assert rows[("waveform l2", "none")] == ["—"]
    assert rows[("waveform l2", "quantize_8bit")] == ["naive", "adaptive"]
    assert rows[("waveform l2", "lowpass_3k")] == ["naive = adaptive"]
    assert rows[("noise (waveform l2)", "noise_wave")] == ["naive = adaptive"]
    smooth_rows = table[(table["defense"] == "smooth_wave") & (table["attacks"] == "waveform l2")]
    assert all("r=0.125:" in c and c.startswith("smoothed:") for c in smooth_rows["certified accuracy %"])
    ratios = [c for c in table["ε_r"] if "[" in c]  # Table III's rule: one seed shows its clips, '?' below N_MIN
    assert ratios and all(re.search(r"\] \? n=[0-8]\b", c) for c in ratios), ratios  # (8 clips here)
    first = format_tables(data)
    assert "Defense comparison" in first

    n_runs = len(runs)
    run_grid(load_grid(grid_file), outputs=outputs)
    assert len(_runs(outputs)) == n_runs
    smooth_id = models["smooth_wave"].info.run_id  # the rerun read the certificates back, it did not certify again
    assert len(MlflowClient().get_metric_history(smooth_id, "certified_auc")) == 1
    assert format_tables(collect("tinydef", n_boot=200)) == first


def _model(run):  # type: ignore[no-untyped-def]
    with downloaded(run.info.run_id, f"model/{run.data.tags['advaudio.run_key']}.victim.pt") as path:
        return load_victim(path)
