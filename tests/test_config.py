"""Config composition, overrides and one-line errors; registry lookups."""
from __future__ import annotations

from pathlib import Path

import pytest

from defense.config import CONFIG_ROOT, compose, parse_overrides, read_yaml, set_dotted
from victims.registry import to_dataclass
from victims.registry import ConfigError, Registry
from training.trainer import TrainConfig


@pytest.fixture
def root(tmp_path: Path) -> Path:
    (tmp_path / "dataset").mkdir()
    (tmp_path / "dataset" / "toy.yaml").write_text("name: toy\nsample_rate: 16000\nclip_seconds: 1.0\n")
    (tmp_path / "dataset" / "other.yaml").write_text("name: other\nsample_rate: 8000\nclip_seconds: 2.0\n")
    (tmp_path / "train").mkdir()
    (tmp_path / "train" / "fast.yaml").write_text("epochs: 3\nlr: 0.01\nmilestones: []\npatience: null\n")
    (tmp_path / "experiment").mkdir()
    (tmp_path / "experiment" / "exp.yaml").write_text(
        "dataset: toy\ntrain: fast\nnote: hello\noverrides:\n  train.epochs: 5\n")
    return tmp_path


def test_compose_expands_groups_and_applies_overrides(root: Path) -> None:
    cfg = compose("exp", {"train.lr": 1}, root=root)
    assert cfg["dataset"] == {"name": "toy", "sample_rate": 16000, "clip_seconds": 1.0}
    assert cfg["train"]["epochs"] == 5  # experiment file override
    assert cfg["train"]["lr"] == 1.0 and isinstance(cfg["train"]["lr"], float)  # int accepted for float
    assert cfg["note"] == "hello"


def test_group_swap_then_dotted_override(root: Path) -> None:
    cfg = compose("exp", parse_overrides(["dataset=other", "dataset.clip_seconds=0.5", "train.patience=3"]),
                  root=root)
    assert cfg["dataset"]["name"] == "other" and cfg["dataset"]["clip_seconds"] == 0.5
    assert cfg["train"]["patience"] == 3


@pytest.mark.parametrize("overrides, message", [
    ({"train.epoch": 3}, r"unknown key 'train.epoch' \(no 'epoch' in train \(did you mean 'epochs'\?\)\)"),
    ({"nope.x": 1}, r"unknown key 'nope.x'"),
    ({"train.epochs": "many"}, r"bad value for 'train.epochs': 'many' is str, expected int"),
    ({"train.epochs": 2.5}, r"bad value for 'train.epochs'"),
    ({"dataset": "missing"}, r"unknown dataset option 'missing'.*known: other, toy"),
])
def test_bad_override_is_one_line_error(root: Path, overrides: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as err:
        compose("exp", overrides, root=root)
    assert "\n" not in str(err.value)


def test_parse_overrides_values_are_yaml() -> None:
    assert parse_overrides(["a=3", "b=0.5", "c=[1, 2]", "d=null", "e=text"]) == {
        "a": 3, "b": 0.5, "c": [1, 2], "d": None, "e": "text"}
    with pytest.raises(ConfigError, match="must look like key=value"):
        parse_overrides(["novalue"])


def test_invalid_yaml_and_non_mapping(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("a: [1, 2\n")
    with pytest.raises(ConfigError, match="invalid YAML in"):
        read_yaml(bad)
    bad.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="must hold a mapping"):
        read_yaml(bad)


def test_to_dataclass_checks_keys_and_types() -> None:
    cfg = to_dataclass(TrainConfig, {"epochs": 2, "optimizer": "sgd", "patience": None}, "train")
    assert cfg.epochs == 2 and cfg.optimizer == "sgd"
    with pytest.raises(ConfigError, match=r"unknown key 'train.epoch'.*did you mean 'epochs'"):
        to_dataclass(TrainConfig, {"epoch": 1}, "train")
    with pytest.raises(ConfigError, match=r"bad value for 'train.optimizer': 'rmsprop' is not one of"):
        to_dataclass(TrainConfig, {"optimizer": "rmsprop"}, "train")
    with pytest.raises(ConfigError, match=r"bad value for 'train.patience'"):
        to_dataclass(TrainConfig, {"patience": "soon"}, "train")


def test_set_dotted_keeps_types() -> None:
    cfg = {"a": {"b": True, "c": None}}
    set_dotted(cfg, "a.c", 4)
    assert cfg["a"]["c"] == 4
    with pytest.raises(ConfigError, match="expected bool"):
        set_dotted(cfg, "a.b", 1)


def test_a_number_replaces_a_measured_budget_and_back() -> None:
    """``defense=pgd_at_wave defense.eps=0.05``: the ``eps: auto`` error message suggests exactly this override."""
    cfg = {"eps": "auto", "norm": "l2"}
    set_dotted(cfg, "eps", 0.05)
    assert cfg["eps"] == 0.05
    set_dotted(cfg, "eps", "auto")
    assert cfg["eps"] == "auto"
    with pytest.raises(ConfigError, match="expected str"):
        set_dotted(cfg, "norm", 2)
    with pytest.raises(ConfigError, match="expected str"):
        set_dotted(cfg, "eps", True)
    device = {"device": "auto"}  # a string for a string stays a string: cpu for auto, and back
    set_dotted(device, "device", "cpu")
    set_dotted(device, "device", "auto")
    assert device["device"] == "auto"
    spec = compose("train", parse_overrides(["defense=pgd_at_wave", "defense.eps=0.05"]))
    assert spec["defense"]["eps"] == 0.05


def test_registry_errors_name_the_problem() -> None:
    reg: Registry = Registry("widget")

    @reg.register("round_widget")
    def make(size: int = 1) -> int:
        return size

    assert reg.create("round_widget", size=3) == 3
    with pytest.raises(ConfigError, match=r"unknown widget 'round_widgt' \(did you mean 'round_widget'\?\); known"):
        reg.get("round_widgt")
    with pytest.raises(ConfigError, match=r"unknown key 'sise' for widget 'round_widget'.*accepted: size"):
        reg.create("round_widget", sise=2)
    with pytest.raises(ValueError, match="registered twice"):
        reg.register("round_widget")(make)


@pytest.mark.parametrize("name", [p.stem for p in sorted((CONFIG_ROOT / "experiment").glob("*.yaml"))
                                  if "study" not in read_yaml(p)])
def test_every_experiment_loads_and_every_cell_validates(name: str) -> None:
    """Every grid or single-model YAML resolves through the one loader (cells, attacks, budgets), and every
    model's train and dataset sections pass their typed checks."""
    from defense.grid import load_grid
    from training.data import parse_config
    from training.trainer import TrainConfig

    grid = load_grid(name)
    for option, info in grid.attack_info.items():
        eps_max, search = grid.evaluation.budgets(info.domain, info.norm, option)
        assert 0 < eps_max <= search
    for cell in grid.cells():
        cfg = grid.cell_config(*cell)
        to_dataclass(TrainConfig, cfg["train"], "train")
        assert parse_config(cfg["dataset"]).name == cfg["dataset"]["name"]


@pytest.mark.parametrize("option", [p.stem for p in sorted((CONFIG_ROOT / "train").glob("*.yaml"))])
def test_every_train_option_validates(option: str) -> None:
    """Each file's values reach the typed config (ints accepted for floats), none dropped or defaulted."""
    from defense.config import load_option
    from training.trainer import TrainConfig

    raw = load_option("train", option)
    cfg = to_dataclass(TrainConfig, raw, "train")
    assert {key: getattr(cfg, key) for key in raw} == raw


def test_paper_004_follows_seed_004() -> None:
    """Seed 004 Sec. VI: random targets for every attack but DeepFool; JSMA (L0) apart from the L2 rows;
    eps* searched beyond ||eps||_2 <= 3 for eps_r."""
    from defense.grid import load_grid

    grid = load_grid("paper_004")
    targeted = {name for name, info in grid.attack_info.items() if info.targeted}
    assert targeted == set(grid.attacks) - {"deepfool_l2"}
    assert grid.attack_info["jsma"].norm == "l0"
    assert {info.norm for name, info in grid.attack_info.items() if name != "jsma"} == {"l2"}
    assert grid.evaluation.budgets("representation", "l2") == (3.0, 30.0)
