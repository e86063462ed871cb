"""The leaderboard study (issue 21 item 5): ``study: leaderboard`` trains defenses × backbones and benchmarks each
under its threat models; a rerun benchmarks nothing again, ``report`` rebuilds the same page from MLflow alone, the
plan counts every benchmark, and a config that cannot make a fair leaderboard is refused in one line."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from mlflow.tracking import MlflowClient

from defense.config import load_option
from evaluation.tracking import iter_runs
from experiments.leaderboard.config import load_study
from experiments.leaderboard.plan import plan
from experiments.leaderboard.report import report
from experiments.leaderboard.run import entries_folder, run
from leaderboard.page import md_escape
from victims.registry import ConfigError

TM = {"name": "tiny_lb", "version": 1,
      "dataset": {"option": "fsdd", "overrides": {"clip_seconds": 0.5, "sample_rate": 8000}},
      "split": "test", "domain": "waveform", "norm": "l2", "budget": 0.25, "search_eps_max": 1.0,
      "protocol": {"n_clips": 10, "seed": 0, "n_budgets": 2, "eps_rtol": 0.2, "batch_size": 10, "n_boot": 100,
                   "confidence": 0.95, "adaptive": {"bpda": "identity", "eot_samples": 2},
                   "certify_n0": 8, "certify_n": 32, "certify_alpha": 0.01,
                   "attacks": [{"option": "apgd_ce", "overrides": {"domain": "waveform", "steps": 3}},
                               {"option": "fmn_l2", "name": "fmn",
                                "overrides": {"domain": "waveform", "max_stepsize": 0.1, "steps": 5}},
                               {"option": "noise", "overrides": {"snr_db": None}}]}}


def threat_model(folder: Path, root: Path | None = None, name: str = "tiny_lb", **changes: object) -> str:
    raw = json.loads(json.dumps(TM))
    if root is not None:
        raw["dataset"]["overrides"]["root"] = str(root)
    raw.update(name=name, **changes)
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(raw))
    return str(path)


def study(tm: list[str], **changes: object) -> dict:
    raw = {"study": "leaderboard", "name": "lb_tiny", "threat_models": tm, "train": "demo",
           "backbones": {"m5": {"frontend": "waveform", "victim": "m5"}},
           "defenses": {"original": {"defense": "none"}, "smoothing": {"defense": "smooth_wave"}},
           "train_data": {"split.train_fraction": 0.1},
           "overrides": {"backbones.m5.victim.width": 8, "train.epochs": 1, "train.device": "cpu"}}
    raw.update(changes)
    return raw


def runs_of(client: MlflowClient, experiment: str, kind: str) -> list:
    exp = client.get_experiment_by_name(experiment)
    return [r for r in iter_runs(exp.experiment_id, client=client) if r.data.tags.get("advaudio.kind") == kind]


@pytest.mark.slow
@pytest.mark.timeout(400)
def test_study_trains_benchmarks_resumes_and_reports(tmp_path: Path, fsdd_root: Path) -> None:
    raw = study([threat_model(tmp_path, fsdd_root)])
    outputs = tmp_path / "out"
    steps: list[str] = []
    assert run(raw, {}, tracking_uri=None, outputs=outputs, progress=lambda m, advance=True: steps.append(m)) == "lb_tiny"
    folder = entries_folder(outputs, "lb_tiny", "tiny_lb")
    original, smoothed = (json.loads((folder / f"{n}.json").read_text()) for n in ("original_m5", "smoothing_m5"))
    assert original["metrics"]["eps_r"] is None and original["metrics"]["certified_accuracy"] is None
    assert smoothed["metrics"]["eps_r"]["reference"] == "original_m5"  # eps_r against its backbone's original
    assert smoothed["metrics"]["certified_accuracy"] is not None  # smoothed on the waveform, L2: certified
    assert (original["card"]["objective"], smoothed["card"]["objective"]) == ("clean", "gaussian_augment")
    assert smoothed["card"]["smoothing_sigma"] == 0.01 and smoothed["card"]["data"]["train_size"] < 300
    page = (folder / "leaderboard.md").read_text()
    assert md_escape("original_m5") in page and md_escape("smoothing_m5") in page and (folder / "index.html").is_file()
    client = MlflowClient(f"sqlite:///{outputs / 'mlflow.db'}")
    assert len(runs_of(client, "lb_tiny", "train")) == 2
    entry_runs = runs_of(client, "lb_tiny", "entry")
    assert {r.data.tags["advaudio.model"] for r in entry_runs} == {"original_m5", "smoothing_m5"}
    assert all(r.data.metrics["n_clips"] == 10 for r in entry_runs)
    assert len(runs_of(client, "leaderboard", "benchmark")) == 2
    stamps = {p.name: p.stat().st_mtime_ns for p in folder.glob("*.json")}

    steps.clear()  # a rerun trains and benchmarks nothing, and the entry files stay as they were
    run(raw, {}, tracking_uri=None, outputs=outputs, progress=lambda m, advance=True: steps.append(m))
    assert len(runs_of(client, "leaderboard", "benchmark")) == 2 and len(runs_of(client, "lb_tiny", "entry")) == 2
    assert {p.name: p.stat().st_mtime_ns for p in folder.glob("*.json")} == stamps
    assert not [s for s in steps if "attacking" in s]

    for entry_run in runs_of(client, "lb_tiny", "entry"):  # killed after the benchmark, before its entry run
        client.delete_run(entry_run.info.run_id)
    run(raw, {}, tracking_uri=None, outputs=outputs, progress=lambda m, advance=True: None)
    assert len(runs_of(client, "leaderboard", "benchmark")) == 2  # the entry files were valid: not benchmarked again
    assert len(runs_of(client, "lb_tiny", "entry")) == 2

    text = report("lb_tiny", None, outputs)  # from MLflow alone: the same page
    rebuilt = outputs / "reports" / "lb_tiny" / "tiny_lb"
    assert (rebuilt / "leaderboard.md").read_text() == page
    assert "| Rank |" in text and "Model cards" not in text and md_escape("smoothing_m5") in text


@pytest.mark.timeout(120)
def test_plan_counts_each_benchmark(tmp_path: Path, fsdd_root: Path) -> None:
    found = plan(study([threat_model(tmp_path, fsdd_root)]), {})
    phases = [(i.phase, i.label) for i in found.items]
    assert [label for phase, label in phases if phase == "train"] == ["original_m5", "smoothing_m5"]
    attacks = {label: i for i in found.items for phase, label in [(i.phase, i.label)] if phase == "attack"}
    assert set(attacks) == {f"tiny_lb/{m}/{a}" for m in ("original_m5", "smoothing_m5") for a in ("apgd_ce", "fmn", "noise")}
    assert [label for phase, label in phases if phase == "certify"] == ["tiny_lb/smoothing_m5"]
    # behind the smoothed model's noise the gradient attacks average 2 EoT draws per step; noise needs no gradient
    assert attacks["tiny_lb/smoothing_m5/apgd_ce"].passes.grad > attacks["tiny_lb/original_m5/apgd_ce"].passes.grad
    assert attacks["tiny_lb/smoothing_m5/noise"].passes == attacks["tiny_lb/original_m5/noise"].passes
    assert any("not counted" in note for note in found.notes)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("change, message", [
    ({"defenses": {"original": {"defense": "none"}, "pgd": {"defense": "pgd_at_wave"}}},
     "defense 'pgd' (pgd_at_wave) has eps: auto"),
    ({"defenses": {"original": {"defense": "none"}, "noise": {"defense": "noise_wave"}}},
     "defense 'noise' (noise_wave) is an inference-time transform"),
    ({"train_data": {"split.test_fold": 1}}, "train_data.split.test_fold: only keys that leave the test clips alone"),
    ({"reference": "clean"}, "reference 'clean' is not one of the defenses"),
    ({"seeds": [0]}, "unknown key 'seeds' in a leaderboard experiment"),
    ({"backbones": {"m5": {"victim": "m5"}}}, "backbone 'm5' must be {frontend:"),
])
def test_bad_configs_are_one_line_errors(change: dict, message: str, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="^" + message.replace("(", r"\(").replace(")", r"\)").replace("{", r"\{")) \
            as err:
        load_study(study([threat_model(tmp_path)], **change))
    assert "\n" not in str(err.value)


@pytest.mark.timeout(60)
def test_threat_models_must_share_their_data(tmp_path: Path) -> None:
    other = threat_model(tmp_path, name="other_lb",
                         dataset={"option": "fsdd", "overrides": {"clip_seconds": 1.0, "sample_rate": 8000}})
    with pytest.raises(ConfigError, match="^threat models tiny_lb and other_lb evaluate on different data"):
        load_study(study([threat_model(tmp_path), other]))
    with pytest.raises(ConfigError, match="^threat model 'tiny_lb' is listed twice"):
        load_study(study([threat_model(tmp_path), threat_model(tmp_path)]))


@pytest.mark.timeout(60)
def test_shipped_config_orders_references_first_and_trains_at_stated_budgets() -> None:
    found = load_study(load_option("experiment", "leaderboard_fsdd"))
    names = list(found.models)
    assert names[:2] == ["original_m5", "original_cnn"] and len(names) == 14
    for model in found.models.values():
        defense = model.config["defense"]
        assert "eps_fraction" not in defense and defense.get("eps") in (None, 0.25)
        ref = found.reference_of(model)
        assert (ref is None) == (model.defense == "original")
        assert ref is None or (ref.backbone, ref.defense) == (model.backbone, "original")
    assert set(found.threat_models) == {"fsdd_wave_linf", "fsdd_wave_l2"}
    assert found.models["pgd_at_m5"].config["dataset"]["split"]["train_fraction"] == 0.5
