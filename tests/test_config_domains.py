"""Values validated where they are read (issue 17, item 3): every config field has a declared domain, checked
when the config is composed, and a value outside it is one line naming the key; splits that cannot train or
evaluate a classifier and devices this machine lacks are refused the same way, before any work."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from defense.cli import main
from evaluation.config import EvalConfig
from tiny_configs import TINY_TRAIN
from training.data import load_splits
from training.data.errors import DataError
from training.devices import resolve_device
from training.trainer import TrainConfig
from user_errors import one_line
from victims.registry import ConfigError, to_dataclass
from victims.schema import above, at_least, between, check_domains, matching

RATE = 8000


def refused(args: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    """Run the CLI, expect exit 2 and one error line (after MLflow's own INFO lines when it creates a store)."""
    code = main(args)
    lines = capsys.readouterr().err.splitlines()
    assert code == 2 and all(" INFO mlflow." in line for line in lines[:-1]), (code, lines)
    return lines[-1]


# --- the schema --------------------------------------------------------------------------------------------


@dataclass
class Example:
    count: int = field(default=1, metadata=at_least(1))
    rate: float = field(default=0.5, metadata=above(0))
    share: float = field(default=0.5, metadata=between(0, 1, "[)"))
    budgets: dict = field(default_factory=lambda: {"a": {"l2": 1.0}}, metadata=above(0, each=True))
    name: str = field(default="cpu", metadata=matching(r"cpu|cuda(:\d+)?", "cpu or cuda[:N]"))
    optional: int | None = field(default=None, metadata=at_least(0))

    def __post_init__(self) -> None:
        check_domains(self, "ex")


@pytest.mark.timeout(30)
@pytest.mark.parametrize("kwargs, message", [
    ({"count": 0}, "ex.count must be >= 1, got 0"),
    ({"rate": 0.0}, "ex.rate must be > 0, got 0.0"),
    ({"rate": math.inf}, "ex.rate must be > 0, got inf"),
    ({"rate": math.nan}, "ex.rate must be > 0, got nan"),
    ({"share": 1.0}, "ex.share must be in [0, 1), got 1.0"),
    ({"budgets": {"a": {"l2": 1.0, "linf": -0.1}}}, "ex.budgets must be numbers > 0, got {'a': {'l2': 1.0, "
                                                    "'linf': -0.1}}"),
    ({"name": "cuda/foo"}, "ex.name must be cpu or cuda[:N], got 'cuda/foo'"),
    ({"optional": -1}, "ex.optional must be >= 0, got -1"),
])
def test_a_value_outside_its_declared_domain_is_one_line_naming_the_key(kwargs: dict, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        Example(**kwargs)
    assert one_line(err) == message


@pytest.mark.timeout(30)
def test_values_inside_their_domains_pass() -> None:
    Example(count=1, rate=1e-9, share=0.0, budgets={}, name="cuda:3", optional=None)
    Example(share=0.999, budgets={"a": {"l2": 3.0, "l0": 1000}})


@pytest.mark.timeout(30)
def test_every_field_of_the_config_dataclasses_defaults_inside_its_domain() -> None:
    """The defaults satisfy their own declarations (the check runs at construction)."""
    TrainConfig()
    EvalConfig()
    to_dataclass(TrainConfig, {"epochs": 1, "patience": None, "milestones": [1, 2]}, "train")


# --- train / prepare / experiment on the command line -------------------------------------------------------


@pytest.mark.timeout(120)
@pytest.mark.parametrize("override, message", [
    ("train.epochs=-1", "train.epochs must be >= 1, got -1"),
    ("train.epochs=0", "train.epochs must be >= 1, got 0"),
    ("train.batch_size=0", "train.batch_size must be >= 1, got 0"),
    ("train.lr=-1", "train.lr must be > 0, got -1.0"),
    ("train.patience=0", "train.patience must be >= 1, got 0"),
    ("train.device=cuda/foo", "train.device must be auto, cpu, cuda, cuda:N or mps, got 'cuda/foo'"),
    ("dataset.split.val_fraction=0", "dataset.split.val_fraction must be in (0, 1), got 0.0"),
    ("dataset.split.test_fraction=0", "dataset.split.test_fraction must be in (0, 1), got 0.0"),
    ("dataset.sample_rate=0", "dataset.sample_rate must be >= 1, got 0"),
])
def test_train_refuses_a_value_outside_its_domain_before_any_work(
        override: str, message: str, env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Before: epochs -1/0 and patience 0 recorded an untrained model as a finished victim (exit 0); batch size 0,
    a negative learning rate and cuda/foo were tracebacks; an empty split trained and reported accuracy 0 or 1."""
    out = env / "out"
    assert refused(["train", "--outputs", str(out), *TINY_TRAIN, override], capsys) == \
        f"advaudio train: error: {message}"
    assert not out.exists() and not (env / "cache").exists()  # nothing was read, created or logged


@pytest.mark.timeout(120)
@pytest.mark.parametrize("value", ["0", "-5"])
def test_experiment_refuses_an_evaluation_without_examples(value: str, env: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    """Before: 0 was a traceback after training; -5 logged an empty evaluation that replaced earlier results."""
    out = env / "out"
    assert refused(["experiment", "demo", "--outputs", str(out), f"evaluation.n_examples={value}"], capsys) == \
        f"advaudio experiment: error: evaluation.n_examples must be >= 1, got {value}"
    assert not out.exists()


# --- splits a classifier cannot use -------------------------------------------------------------------------


def folder_data(root: Path, recordings: dict[str, int]) -> list[str]:
    """A folder-per-class data set with ``recordings[c]`` noise recordings of class ``c``; its overrides."""
    rng = np.random.default_rng(0)
    for name, n in recordings.items():
        (root / name).mkdir(parents=True)
        for i in range(n):
            sf.write(root / name / f"{i}.wav", (0.3 * rng.standard_normal(RATE // 10)).astype(np.float32), RATE)
    return ["dataset=folder", f"dataset.root={root}", f"dataset.sample_rate={RATE}", "dataset.clip_seconds=0.1"]


@pytest.mark.timeout(120)
@pytest.mark.parametrize("recordings, message", [
    ({"a": 8}, "folder has 1 class (a): a classifier needs at least 2"),
    ({"a": 2, "b": 2}, "folder: the validation split is empty (2 train, 0 validation, 2 test clips; "
                       "dataset.split.method fractions): give each class more recordings or change dataset.split"),
    ({"a": 1, "b": 1}, "folder: the validation split is empty (2 train, 0 validation, 0 test clips; "
                       "dataset.split.method fractions): give each class more recordings or change dataset.split"),
])
def test_splits_that_cannot_train_or_evaluate_are_refused(recordings: dict[str, int], message: str, env: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    """Before: one class trained to test accuracy 1.0000, an empty validation/test split to 0.0000, exit 0."""
    data = folder_data(env / "data", recordings)
    assert refused(["prepare", *data], capsys) == f"advaudio prepare: error: {message}"
    if len(recordings) == 1:  # train reads the data through the same load_splits (a store to create: slower)
        out = env / "out"
        assert refused(["train", "--outputs", str(out), *data, "train.epochs=1"], capsys) == \
            f"advaudio train: error: {message}"
        assert not (out / "checkpoints").exists()


@pytest.mark.timeout(60)
def test_a_training_split_with_a_single_class_is_refused(env: Path) -> None:
    """Two classes in the data set, one in the training split: a test fraction of 0.75 takes both of class b's
    recordings (round(1.5) = 2), none is left to train on."""
    overrides = folder_data(env / "data", {"a": 8, "b": 2})
    cfg = {"name": "folder", "root": overrides[1].split("=", 1)[1], "sample_rate": RATE, "clip_seconds": 0.1,
           "split": {"test_fraction": 0.75}}
    with pytest.raises(DataError) as err:
        load_splits(cfg)
    assert one_line(err) == "folder: the training split holds only class 'a' (1 train, 1 validation, 8 test clips)"


# --- devices ------------------------------------------------------------------------------------------------


@pytest.mark.timeout(60)
def test_a_device_this_machine_lacks_is_one_line_naming_the_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ConfigError) as err:
        resolve_device("cuda")
    assert one_line(err) == ("train.device=cuda: this machine has no CUDA GPU (torch.cuda.is_available() is False); "
                             "use cpu or auto")
    assert resolve_device("auto") == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(ConfigError) as err:
        resolve_device("cuda:7", "--device")
    assert one_line(err) == "--device=cuda:7: this machine has 1 CUDA GPU (cuda:0)"
    assert resolve_device("cuda:0") == torch.device("cuda:0")
    with pytest.raises(ConfigError, match=r"^--device must be auto, cpu, cuda, cuda:N or mps, got 'cuda/foo'$"):
        resolve_device("cuda/foo", "--device")


@pytest.mark.timeout(120)
def test_train_on_a_gpu_this_machine_lacks_is_refused_before_any_work(env: Path,
                                                                       capsys: pytest.CaptureFixture[str]) -> None:
    """Before: `train.device=cuda` without a GPU was a traceback from torch's CUDA initialisation."""
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    device = f"cuda:{count}"  # one past the last GPU: absent on every machine
    message = (f"this machine has {count} CUDA GPU{'s' if count > 1 else ''}" if count else "this machine has no "
               "CUDA GPU")
    out = env / "out"
    assert refused(["train", "--outputs", str(out), *TINY_TRAIN, f"train.device={device}"], capsys).startswith(
        f"advaudio train: error: train.device={device}: {message}")
    assert not (out / "checkpoints").exists() and not (env / "cache").exists()


@pytest.mark.gpu
@pytest.mark.timeout(120)
def test_the_gpus_of_this_machine_resolve_and_one_past_the_last_is_refused() -> None:
    count = torch.cuda.device_count()
    assert resolve_device("cuda") == torch.device("cuda") and resolve_device(f"cuda:{count - 1}").index == count - 1
    with pytest.raises(ConfigError) as err:
        resolve_device(f"cuda:{count}", "--device")
    assert one_line(err).startswith(f"--device=cuda:{count}: this machine has {count} CUDA GPU")
