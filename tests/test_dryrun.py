"""``advaudio experiment NAME --dry-run``: every shipped experiment and study config runs every cell (counted in the
throw-away MLflow store against the runner's own step count or the study's layout), a broken cell is named in one
line with exit 1, the stand-in layouts are read by the real loaders, and the dry settings are the documented ones."""
from __future__ import annotations

import time
from pathlib import Path

import pytest
import torch
import yaml
from mlflow.tracking import MlflowClient

from defense.attack_cell import NOT_IN_KEY
from defense.cli import main
from defense.config import CONFIG_ROOT, load_option, options
from defense.dryrun_grid import ORIGINAL_ONLY, GridDry, store_uri
from defense.dryrun_models import ModelCheck, ShapeError, check_model
from defense.dryrun_shrink import (CLIP_SAMPLES, SEEDS, capped, clip_seconds, dry_evaluation, lowered, widest_window)
from defense.grid import load_grid
from defense.grid_transfer import run_coords
from defense.inference_cells import attack_modes
from evaluation.tracking import ORIGINAL, iter_runs
from training.data import load_splits
from training.data.standin import ESC50_CLASSES, LAYOUTS, write_standin
from victims.victim import build_victim

EXPERIMENTS = sorted(p.stem for p in (CONFIG_ROOT / "experiment").glob("*.yaml"))


TINY = """
name: tiny_dry
train: demo
grid:
  dataset: [gm_instruments]
  frontend: [stft_db_128]
  victim: [averagepool_cnn]
  defense: [none, fgsm_mix]
  attack: [deepfool_l2, fgsm]
attack_overrides:
  fgsm: {domain: representation, norm: l2}
overrides:
  dataset.classes: [flute, hi_hat]
  dataset.clip_seconds: 0.25
  dataset.sample_rate: 8000
"""


def _tiny(tmp_path: Path, text: str = TINY) -> str:
    path = tmp_path / "tiny_dry.yaml"
    path.write_text(text)
    return str(path)


def _dry(args: list[str], outputs: Path) -> int:
    return main(["experiment", *args, "--dry-run", "--keep", "--no-progress", "--outputs", str(outputs)])


def _covering_columns(grid) -> int:  # noqa: ANN001
    """Model columns ``--cover`` runs end to end: as many as the longest of the data set, front-end, victim and
    (dry) seed lists, each value in at least one."""
    return max(len(grid.axes["dataset"]), len(grid.axes["frontend"]), len(grid.axes["victim"]),
               min(len(grid.seeds), SEEDS))


def _store(outputs: Path, name: str) -> list:
    """Finished (and transfer) runs of experiment ``name`` in every store the kept dry run left."""
    folder = next(outputs.glob("advaudio-dry-run-*"))
    runs = []
    for db in sorted(folder.glob("outputs/**/mlflow.db")):
        client = MlflowClient(store_uri(db.parent))
        exp = client.get_experiment_by_name(name)
        runs += [r for r in iter_runs(exp.experiment_id, client=client) if r.data.tags.get("advaudio.status") ==
                 "finished" or r.data.tags.get("advaudio.kind") == "transfer"]
    return runs


def _kinds(runs: list) -> dict[str, list]:
    out: dict[str, list] = {}
    for run in runs:
        out.setdefault(run.data.tags.get("advaudio.kind", ""), []).append(run)
    return out


def _expected_study_runs(raw: dict) -> dict[str, tuple[int, str | None]]:
    """Runs each study's layout implies (from the YAML alone): kind -> (count, metric >= 1 on each)."""
    if raw["study"] == "prinz_flexer":
        return {"train": (1, None), "clean": (1, None), "attack": (len(raw["attacks"]), "attempts")}
    if raw["study"] == "subramanian":
        models, attacks = len(raw["models"]), len(raw["attacks"])
        return {"train": (models, None), "attack": (models * attacks, "base_size"),
                "transfer": (len(raw["transfer"]), None)}
    if raw["study"] == "leaderboard":
        models = len(raw["backbones"]) * len(raw["defenses"])
        return {"train": (models, None), "entry": (models * len(raw["threat_models"]), "n_clips")}
    folds = len(raw.get("test_folds") or [None])
    inputs = 1 + len(raw["spectrogram_models"])
    return {"train": (folds * inputs, None), "seed003_eval": (folds * inputs, None)}


def _pairwise_attack_runs(grid, columns: int) -> int:  # noqa: ANN001
    """Attack runs of a ``--cover`` dry run: the first column evaluates every defense with every attack (in each of
    its modes); each later one every defense with the first table attack and the original model with the others."""
    def runs(defense: str, attack: str) -> int:
        return len(attack_modes(grid, attack, grid.attacks[attack], grid.defense_config(defense)))

    defenses, attacks = grid.axes["defense"], grid.axes["attack"]
    full = sum(runs(d, a) for d in defenses for a in attacks)
    if ORIGINAL not in defenses or len(defenses) == 1 or not attacks:
        return full * columns
    first = next((a for a in attacks if grid.attack_info[a].in_tables), attacks[0])
    later = sum(runs(d, first) for d in defenses) + sum(runs(ORIGINAL, a) for a in attacks if a != first)
    return full + later * (columns - 1)


@pytest.mark.slow
@pytest.mark.timeout(900)
@pytest.mark.parametrize("name", EXPERIMENTS)
def test_dry_run_of_every_shipped_config_runs_every_cell(name: str, tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    """With ``--cover`` (every model still checked at full size; cells end to end in the columns covering every
    data set, front-end, backbone and seed: the first with every defense and attack, the others pairwise): the full
    dry run of paper_004 alone takes about 25 minutes on 2 cores, with ``--cover`` about 3."""
    started = time.monotonic()
    assert _dry([name, "--cover"], tmp_path) == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    raw = load_option("experiment", name)
    runs = _kinds(_store(tmp_path, raw.get("name", name)))
    if "study" in raw:
        for kind, (count, metric) in _expected_study_runs(raw).items():
            assert len(runs.get(kind, [])) == count, (kind, out)
            assert all(r.data.metrics[metric] >= 1 for r in runs[kind]) if metric else True
    else:
        grid = load_grid(name)
        columns = _covering_columns(grid)
        models = runs.get("train", []) + runs.get("defend", [])
        attacks = [r for r in runs.get("attack", []) if r.data.tags.get("advaudio.family") != "ensemble"]
        assert len(models) == columns * len(grid.axes["defense"])
        assert len(attacks) == _pairwise_attack_runs(grid, columns)
        pairs = {(r.data.tags["advaudio.defense"], r.data.tags["advaudio.attack"]) for r in attacks}
        assert pairs == {(d, a) for d in grid.axes["defense"] for a in grid.axes["attack"]}  # every pair somewhere
        for i, axis in enumerate(("dataset", "frontend", "victim")):  # every value in some column
            assert {run_coords(r)[i] for r in models} == set(grid.axes[axis]), axis
        assert all(r.data.metrics["base_size"] >= 1 for r in attacks)
        if grid.axes["attack"]:
            assert runs.get("transfer"), "no transfer run"
            folder = next(tmp_path.glob("advaudio-dry-run-*"))  # Fig. 1 is drawn in the first group's store only
            drawn = [db for db in folder.glob("outputs/**/mlflow.db") if any(db.parent.glob("**/plots/fig1_*.png"))]
            assert len(drawn) == 1, drawn
    assert "every cell ran" in out
    print(f"dry run of {name}: {time.monotonic() - started:.0f} s")  # shown with -s: the per-config budget


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_a_failing_attack_names_its_cell(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    from attacks.gradient import FGSM

    def broken(self, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003
        raise RuntimeError("broken attack")

    monkeypatch.setattr(FGSM, "run", broken)
    assert _dry([_tiny(tmp_path)], tmp_path / "out") == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert "dry run failed in gm_instruments / stft_db_128 / averagepool_cnn / none / fgsm" in err[0]
    assert err[0].endswith("RuntimeError: broken attack")
    found = _kinds(_store(tmp_path / "out", "tiny_dry"))
    assert {r.data.tags["advaudio.attack"] for r in found["attack"]} == {"deepfool_l2"}  # it stopped at the first


@pytest.mark.timeout(300)
def test_a_model_that_cannot_take_its_input_is_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert _dry([_tiny(tmp_path, TINY.replace("victim: [averagepool_cnn]", "victim: [m5]"))], tmp_path / "out") == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("advaudio experiment: dry run failed in the full-size check of "
                          "gm_instruments / stft_db_128 / m5: ConfigError: ")


@pytest.mark.timeout(300)
@pytest.mark.parametrize("dataset", sorted(LAYOUTS))
def test_standins_are_read_by_the_real_loaders(dataset: str, tmp_path: Path) -> None:
    cfg = load_option("dataset", dataset)
    info = write_standin(cfg, tmp_path / "data", 0.2)
    splits = load_splits({**cfg, "root": str(tmp_path / "data"), "clip_seconds": 0.2,
                          "cache_dir": str(tmp_path / "cache")})
    assert min(len(splits.train), len(splits.val), len(splits.test)) >= 1
    assert len(splits.class_names) == info.classes
    assert splits.train.sample_rate == cfg["sample_rate"]
    if dataset == "esc50":
        assert splits.class_names == sorted(ESC50_CLASSES, key=ESC50_CLASSES.index)  # targets 0-49 in order
        assert set(splits.test.labels.tolist()) == set(range(50))  # every class has a test clip
    if dataset == "fsdkaggle2019":
        assert "Accordion" in splits.class_names


def test_gtzan_standin_serves_every_kfold(tmp_path: Path) -> None:
    cfg = load_option("dataset", "gtzan")
    write_standin(cfg, tmp_path / "data", 0.3)
    for fold in range(3):
        part = {**cfg, "root": str(tmp_path / "data"), "clip_seconds": 0.2, "cache_dir": str(tmp_path / "cache"),
                "split": {**cfg["split"], "test_fold": fold}}
        splits = load_splits(part)
        assert min(len(splits.train), len(splits.val), len(splits.test)) >= 1


def test_dry_settings_only_lower_counts() -> None:
    attack = {"name": "cw_l2", "max_iterations": 1000, "binary_search_steps": 4, "learning_rate": 0.01,
              "confidence": 0.0, "params": {"max_iter": 1}, "targeted": True}
    assert lowered(attack, {"max_iterations": 2, "binary_search_steps": 1, "max_iter": 2}) == {
        **attack, "max_iterations": 2, "binary_search_steps": 1}
    assert capped(attack, {"max_iterations": 2, "max_iter": 2}, "attacks.cw.") == {"attacks.cw.max_iterations": 2}
    assert capped({"stft": {"n_fft": 2048}, "tonnetz": {"n_fft": 32}}, {"n_fft": 64}, "frontend.") == {
        "frontend.stft.n_fft": 64}
    ev = dry_evaluation({"n_examples": 500, "eps_rtol": 0.05, "snr_trim": 2048, "base_set": "correct", "seed": 3,
                         "over_the_air_draws": 32}, 1024)
    assert ev == {"n_examples": 2, "eps_rtol": 0.5, "snr_trim": 128, "base_set": "all", "seed": 3,
                  "over_the_air_draws": 2}
    assert widest_window({"n_fft": 128}, [{"fft_sizes": [2048, 64]}, {"steps": 5000}]) == 2048
    assert clip_seconds({"sample_rate": 16000, "clip_seconds": 5.0}, 2048) == 4096 / 16000
    assert clip_seconds({"sample_rate": 8000, "clip_seconds": 0.1}, 0) == 0.1  # never longer than the real clip
    assert clip_seconds({"sample_rate": 8000, "clip_seconds": 4.0}, 0) == CLIP_SAMPLES / 8000


@pytest.mark.timeout(120)
def test_full_size_check_counts_the_real_parameters(tmp_path: Path) -> None:
    cfg = {**load_option("dataset", "esc50"), "clip_seconds": 5.0}
    write_standin(cfg, tmp_path / "data", 5.0)
    splits = load_splits({**cfg, "root": str(tmp_path / "data"), "cache_dir": str(tmp_path / "cache")})
    frontend, victim = load_option("frontend", "cwt_tonnetz"), load_option("victim", "koerich_cnn2d")
    found = check_model("esc50 / cwt_tonnetz / koerich_cnn2d", frontend, victim, splits)
    real = build_victim(frontend, victim, splits.class_names, 16000, 80000)
    assert found.input_shape == tuple(real.frontend.output_shape(80000))
    assert found.parameters == sum(p.numel() for p in real.backbone.parameters())


def test_full_size_check_refuses_a_front_end_that_breaks_its_promise(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = load_option("dataset", "urbansound8k")
    write_standin(cfg, tmp_path / "data", 1.0)
    splits = load_splits({**cfg, "root": str(tmp_path / "data"), "cache_dir": str(tmp_path / "cache")})
    from victims.frontends.spectral import StftDb

    monkeypatch.setattr(StftDb, "output_shape", lambda self, n: (self.n_fft // 2 + 1, 7))
    with pytest.raises(ShapeError, match=r"front-end output is \(2, 1, 129, \d+\), expected \(2, 1, 129, 7\)"):
        check_model("us8k / stft", load_option("frontend", "stft_db_256"), load_option("victim", "resnet18"), splits)


def test_full_size_check_runs_each_front_end_once_for_every_backbone(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = load_option("dataset", "urbansound8k")
    write_standin(cfg, tmp_path / "data", 1.0)
    splits = load_splits({**cfg, "root": str(tmp_path / "data"), "cache_dir": str(tmp_path / "cache")})
    from victims.frontends.spectral import StftDb

    calls = []
    forward = StftDb.forward
    monkeypatch.setattr(StftDb, "forward", lambda self, x: calls.append(x.shape) or forward(self, x))
    frontend, checked = load_option("frontend", "stft_db_256"), {}
    found = [check_model(f"us8k / stft / {name}", frontend, load_option("victim", name), splits, checked)
             for name in ("resnet18", "averagepool_cnn", "resnet18")]
    assert len(calls) == 1  # one real-size forward (and its backward) for three backbones
    alone = [check_model("alone", frontend, load_option("victim", name), splits)
             for name in ("resnet18", "averagepool_cnn")]
    assert len(calls) == 3  # without the shared record, once per call
    assert [(c.input_shape, c.parameters) for c in found] == [(c.input_shape, c.parameters) for c in alone + alone[:1]]


def test_cover_runs_every_defense_with_every_attack_on_the_smallest_backbone() -> None:
    grid = load_grid("paper_004")
    dry = GridDry(grid, cover=True)
    millions = {"googlenet": 6.0, "alexnet": 57.0, "resnet18": 11.2, "resnet34": 21.3, "resnet56": 0.9, "vgg16": 134.0}
    dry.sized([ModelCheck(label, (64, 64), int(millions[label.split(" / ")[2]] * 1e6)) for label, *_ in dry.models()])
    columns = dry.groups()
    assert [c["victim"] for c in columns] == [[v] for v in sorted(millions, key=millions.__getitem__)]
    assert dry.cells(0) == [(d, a) for d in grid.axes["defense"] for a in grid.axes["attack"]]  # the full product
    for axis in ("dataset", "frontend"):  # each value still in some column
        assert {c[axis][0] for c in columns} == set(grid.axes[axis])


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_the_first_group_draws_confusion_matrices_for_the_original_model_only(tmp_path: Path) -> None:
    """With two defended models, their pass reuses the original model's attack runs (the settings it turns off are not
    in a run's key) and draws no confusion matrix, and Fig. 1 is drawn for the original model only."""
    assert set(ORIGINAL_ONLY) <= set(NOT_IN_KEY)  # else the second pass would attack the original model again
    two = TINY.replace("defense: [none, fgsm_mix]", "defense: [none, fgsm_mix, noise_rep]")
    assert _dry([_tiny(tmp_path, two)], tmp_path / "out") == 0
    folder = next((tmp_path / "out").glob("advaudio-dry-run-*"))
    db = next(folder.glob("outputs/**/mlflow.db"))
    client = MlflowClient(store_uri(db.parent))
    attacks = _kinds(_store(tmp_path / "out", "tiny_dry"))["attack"]
    drawn = {(r.data.tags["advaudio.defense"], r.data.tags["advaudio.attack"]):
             "plots/confusion.png" in {a.path for a in client.list_artifacts(r.info.run_id, "plots")} for r in attacks}
    assert drawn == {("none", "deepfool_l2"): True, ("none", "fgsm"): True, ("fgsm_mix", "deepfool_l2"): False,
                     ("fgsm_mix", "fgsm"): False, ("noise_rep", "deepfool_l2"): False,
                     ("noise_rep", "fgsm"): False}
    assert [p.name for p in db.parent.glob("mlartifacts/**/plots/fig1_*.png")] == [
        "fig1_gm_instruments_averagepool_cnn_none.png"]


def test_every_shipped_config_is_covered() -> None:
    assert set(options("experiment")) == set(EXPERIMENTS)
    assert {"paper_004", "fsdd", "defenses_full", "prinz_flexer_full", "subramanian_full",
            "koerich_full"} <= set(EXPERIMENTS)
    for name in EXPERIMENTS:
        assert yaml.safe_load((CONFIG_ROOT / "experiment" / f"{name}.yaml").read_text())


def test_meta_backbone_matches_a_real_forward() -> None:
    victim = build_victim(load_option("frontend", "stft_db_128"), load_option("victim", "googlenet"), ["a", "b"],
                          8000, 2000)
    assert victim(torch.zeros(2, 1, 2000)).shape == (2, 2)
