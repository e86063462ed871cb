"""Best-epoch selection: clean vs robust validation accuracy (under the training objective's attack)."""
from __future__ import annotations

from pathlib import Path

import mlflow
import pytest
import torch

from defense import objectives as O
from defense.pipeline import train_from_config
from tiny import CLASS_NAMES, make_victim, tones
from training.data.base import ClipSet, Splits
from training.step import CleanObjective
from training.trainer import TrainConfig, evaluate, evaluate_robust, selection_criterion, train
from victims.registry import ConfigError


def _clips(n_per_class: int, seed: int) -> ClipSet:
    waves, labels = tones(n_per_class, seed=seed)
    n = len(labels)
    return ClipSet(waves, labels, torch.arange(n), torch.full((n,), -1), list(CLASS_NAMES), 800)


def _cfg(**kw: object) -> TrainConfig:
    base = dict(epochs=8, batch_size=12, lr=0.02, patience=None, device="cpu", seed=3, schedule="cosine")
    base.update(kw)
    return TrainConfig(**base)  # type: ignore[arg-type]


def _score(h: dict[str, float], robust: bool) -> tuple[float, ...]:
    clean = (h["val_accuracy"], -h["val_loss"])
    return (h["val_robust_accuracy"], *clean) if robust else clean


def test_auto_is_robust_for_defenses_and_clean_for_clean_training() -> None:
    for objective in (O.FGSMMix(), O.FGSMMix(alpha=0.0), O.PGDTraining(), O.FastFGSM()):
        assert selection_criterion("auto", objective) == "robust"
        assert selection_criterion("clean", objective) == "clean"
    assert selection_criterion("auto", CleanObjective()) == "clean"
    with pytest.raises(ConfigError, match="select_on=robust needs an adversarial defense") as err:
        train(make_victim(), _clips(2, 1), _clips(2, 2), _clips(2, 3), _cfg(select_on="robust"))
    assert "\n" not in str(err.value)


def test_robust_selection_keeps_the_most_robust_epoch(tmp_path: Path) -> None:
    """FGSM-mix with a large ε on tones: clean validation accuracy is 1 from the first epoch and its
    loss falls to the last, while FGSM validation accuracy is highest at the first epoch (4/18, then
    ≤ 1/18; unchanged by ±0.5 % in lr or ε): the two criteria pick different epochs."""
    data = _clips(12, 1), _clips(6, 2), _clips(4, 3)
    objective = O.FGSMMix(alpha=0.5, eps=12.0)
    clean = train(make_victim(), *data, _cfg(select_on="clean"), objective=objective)
    robust = train(make_victim(), *data, _cfg(), objective=objective)
    assert (clean.criterion, robust.criterion) == ("clean", "robust")
    assert all("val_robust_accuracy" in h for h in robust.history)
    assert all("val_robust_accuracy" not in h for h in clean.history)
    # the validation attack draws no training randomness: both runs trained identically
    assert [{k: v for k, v in h.items() if k != "val_robust_accuracy"} for h in robust.history] == clean.history
    for res, is_robust in ((clean, False), (robust, True)):
        scores = [_score(h, is_robust) for h in res.history]
        assert res.best_epoch == 1 + scores.index(max(scores))
    assert robust.best_epoch != clean.best_epoch, [(h["val_accuracy"], h["val_robust_accuracy"]) for h in robust.history]
    chosen = robust.history[robust.best_epoch - 1]
    device = torch.device("cpu")
    assert evaluate(robust.victim, data[1], 128, device) == (chosen["val_accuracy"], chosen["val_loss"])
    assert evaluate_robust(robust.victim, objective, data[1], 128, device, 3) == chosen["val_robust_accuracy"]

    ckpt = tmp_path / "killed.pt"
    train(make_victim(), *data, _cfg(), objective=objective, checkpoint_path=ckpt, stop_after=2)
    resumed = train(make_victim(seed=9), *data, _cfg(), objective=objective, checkpoint_path=ckpt)
    assert (resumed.history, resumed.best_epoch) == (robust.history, robust.best_epoch)
    with pytest.raises(ConfigError, match="selects epochs on robust"):
        train(make_victim(), *data, _cfg(select_on="clean"), objective=objective, checkpoint_path=ckpt)


def test_training_runs_log_their_criterion(tmp_path: Path) -> None:
    splits = Splits(_clips(4, 1), _clips(2, 2), _clips(2, 3))
    for defense, criterion in (({"name": "clean"}, "clean"), ({"name": "fgsm_mix", "eps": 1.5}, "robust")):
        cfg = {"dataset": {"name": "tones"}, "frontend": {"name": "stft_db", "n_fft": 32, "hop": 16},
               "victim": {"backbone": "koerich_cnn2d", "dense": 8},
               "train": {"epochs": 2, "batch_size": 12, "device": "cpu", "patience": None}, "defense": defense}
        done = train_from_config(cfg, experiment="selection", outputs=tmp_path, splits=splits)
        run = mlflow.get_run(done.run_id)
        assert run.data.params["best_epoch_criterion"] == criterion == done.result.criterion
        assert run.data.metrics["best_epoch"] == done.result.best_epoch
        logged = mlflow.MlflowClient().get_metric_history(done.run_id, "val_robust_accuracy")
        assert len(logged) == (2 if criterion == "robust" else 0)
