"""Trainer: learns, early-stops, checkpoints atomically, and resumes to identical results on CPU."""
from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch

from tiny import make_victim, tones
from training.checkpoints import CheckpointError, load_checkpoint, load_victim, save_atomic, victim_state
from training.data.base import ClipSet
from training.trainer import TrainConfig, train


def _clips(n_per_class: int, seed: int) -> ClipSet:
    waves, labels = tones(n_per_class, seed=seed)
    n = len(labels)
    return ClipSet(waves, labels, torch.arange(n), torch.full((n,), -1), ["low", "mid", "high"], 800)


def _cfg(**kw: object) -> TrainConfig:
    base = dict(epochs=4, batch_size=16, lr=0.02, patience=None, device="cpu", seed=3, schedule="cosine")
    base.update(kw)
    return TrainConfig(**base)  # type: ignore[arg-type]


def test_trains_to_high_accuracy() -> None:
    res = train(make_victim(), _clips(20, 1), _clips(5, 2), _clips(10, 3), _cfg(epochs=8))
    assert res.test_accuracy >= 0.9
    assert len(res.history) == 8
    assert res.history[-1]["train_loss"] < res.history[0]["train_loss"]


def test_normalizer_is_fitted_on_training_split_only() -> None:
    train_set, val_set = _clips(10, 1), _clips(10, 2)
    val_set.waves *= 0.01  # very different statistics: must not leak into the fit
    victim = make_victim()
    train(victim, train_set, val_set, val_set, _cfg(epochs=1))
    feats = victim.features(train_set.waves)
    assert torch.allclose(victim.normalizer.mean.flatten(), feats.mean(dim=(0, 1, 3)), atol=1e-3)


def test_resume_after_kill_matches_uninterrupted(tmp_path: Path) -> None:
    data = _clips(12, 1), _clips(4, 2), _clips(6, 3)
    torch.manual_seed(0)
    full = train(make_victim(), *data, _cfg(), checkpoint_path=tmp_path / "full.pt")
    ckpt = tmp_path / "killed.pt"
    train(make_victim(), *data, _cfg(), checkpoint_path=ckpt, stop_after=2)
    assert load_checkpoint(ckpt)["epoch"] == 2
    resumed = train(make_victim(seed=9), *data, _cfg(), checkpoint_path=ckpt)
    assert resumed.history == full.history
    assert resumed.test_accuracy == full.test_accuracy
    for (k, a), b in zip(full.victim.state_dict().items(), resumed.victim.state_dict().values()):
        assert torch.equal(a, b), k


def test_early_stopping_stops_and_keeps_best(tmp_path: Path) -> None:
    res = train(make_victim(), _clips(10, 1), _clips(4, 2), _clips(4, 3), _cfg(epochs=30, patience=2, lr=0.05))
    assert res.stopped_early
    assert len(res.history) < 30
    best = max((h["val_accuracy"], -h["val_loss"]) for h in res.history)
    chosen = res.history[res.best_epoch - 1]
    assert (chosen["val_accuracy"], -chosen["val_loss"]) == best  # accuracy first, ties by the lower loss


def test_checkpoint_roundtrip_and_errors(tmp_path: Path) -> None:
    from tiny import trained_victim

    victim = trained_victim()
    victim.spec = {}  # the tiny victim is not built from registries: check the raw state round trip
    path = save_atomic(victim_state(victim), tmp_path / "v.pt")
    assert torch.equal(load_checkpoint(path)["model"]["backbone.fc.weight"], victim.backbone.fc.weight)
    assert not list(tmp_path.glob(".*.tmp")), "temporary file left behind"
    (tmp_path / "torn.pt").write_bytes(path.read_bytes()[:100])
    with pytest.raises(CheckpointError, match="cannot read checkpoint .*torn.pt: not a PyTorch checkpoint .*: a zip "
                       "archive that is cut off"):
        load_checkpoint(tmp_path / "torn.pt")
    for name, data, kind in (("clip.wav", b"RIFF\x24\x00\x00\x00WAVEfmt ", "it is a WAV file"),
                             ("notes.victim.pt", b"weights: none\n", "the file is truncated or of another kind"),
                             ("empty.pt", b"", "the file is empty")):
        (tmp_path / name).write_bytes(data)  # before: "[Errno 22] Invalid argument", "pop from empty list", ...
        with pytest.raises(CheckpointError) as err:
            load_checkpoint(tmp_path / name)
        assert str(err.value) == f"cannot read checkpoint {tmp_path / name}: not a PyTorch checkpoint (torch.save's " \
                                 f"zip archive): {kind}"
    with pytest.raises(CheckpointError, match="not found"):
        load_victim(tmp_path / "missing.pt")
    torch.save({"spec": {}, "model": {}, "optimizer": torch.optim.SGD}, tmp_path / "foreign.pt")  # pickles a class
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(tmp_path / "foreign.pt")
    assert "not an advaudio checkpoint" in str(err.value) and "weights_only=False" not in str(err.value)


def test_objectives_backward_runs_outside_autocast() -> None:
    """Issue 8: forward passes autocast, backward passes do not (PyTorch's AMP recipe)."""
    from training.trainer import backward_outside_autocast

    seen: list[bool] = []

    class Probe(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x):  # type: ignore[no-untyped-def]
            return x * 2

        @staticmethod
        def backward(ctx, grad):  # type: ignore[no-untyped-def]
            seen.append(torch.is_autocast_enabled("cpu"))
            return grad * 2

    x = torch.ones(3, requires_grad=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = Probe.apply(x).sum()
        loss.backward(retain_graph=True)  # plain backward inside the context sees autocast on
        backward_outside_autocast("cpu")(loss)
    assert seen == [True, False]
    assert torch.equal(x.grad, torch.full((3,), 4.0))


def test_a_finished_run_keeps_only_what_reuse_needs_and_is_not_trained_again(tmp_path: Path) -> None:
    """Issue 8: once training ends, the checkpoint holds the best weights and history only (no optimizer
    state, RNG or second weight copy); reusing it trains nothing and gives the same result."""
    data = _clips(12, 1), _clips(4, 2), _clips(6, 3)
    ckpt = tmp_path / "run.pt"
    train(make_victim(), *data, _cfg(), checkpoint_path=ckpt, stop_after=2)
    mid = load_checkpoint(ckpt)
    mid_size = ckpt.stat().st_size
    first = train(make_victim(), *data, _cfg(), checkpoint_path=ckpt)
    done = load_checkpoint(ckpt)
    assert done["finished"] and not {"optimizer", "scheduler", "rng_cpu", "best_model"} & set(done)
    assert {"optimizer", "best_model"} <= set(mid) and ckpt.stat().st_size < mid_size
    epochs: list[int] = []
    again = train(make_victim(seed=5), *data, _cfg(), checkpoint_path=ckpt, on_epoch=lambda _m, e: epochs.append(e))
    assert epochs == [] and again.history == first.history and again.best_epoch == first.best_epoch
    assert again.test_accuracy == first.test_accuracy and again.stopped_early == first.stopped_early
    for (k, a), b in zip(first.victim.state_dict().items(), again.victim.state_dict().values()):
        assert torch.equal(a, b), k


@pytest.mark.parametrize("kw, stop_after, resumable", [
    ({}, None, [1, 2, 3]),  # 4 epochs: the last one's resumable state would be overwritten by the finished one
    ({}, 2, [1, 2]),  # a kill after epoch 2 keeps epoch 2's state to resume from
    ({"epochs": 30, "patience": 2, "lr": 0.05}, None, None),  # early stopping: the stopping epoch is not written
])
def test_the_epoch_the_finished_state_replaces_at_once_is_not_written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                      kw: dict, stop_after: int | None,
                                                                      resumable: list[int] | None) -> None:
    """A resumable checkpoint holds four weight copies (weights, Adam's moments, best weights): the last epoch's
    would be replaced by the slim finished state straight away, so it is never written."""
    import training.trainer as trainer

    written: list[object] = []

    def recording(obj: dict, path: Path) -> Path:
        written.append("finished" if obj.get("finished") else obj["epoch"])
        return save_atomic(obj, path)

    monkeypatch.setattr(trainer, "save_atomic", recording)
    data = _clips(12, 1), _clips(4, 2), _clips(6, 3)
    res = train(make_victim(), *data, _cfg(**kw), checkpoint_path=tmp_path / "run.pt", stop_after=stop_after)
    if resumable is None:  # early stopping after len(history) epochs
        assert res.stopped_early
        resumable = list(range(1, len(res.history)))
    assert written == resumable + ([] if stop_after else ["finished"])


def test_a_model_that_explodes_with_its_input_is_warned_about(caplog: pytest.LogCaptureFixture) -> None:
    from defense.pipeline import warn_if_large

    n = sum(p.numel() for p in make_victim().parameters())
    assert not warn_if_large(n, "tiny")  # far below the default limit
    with caplog.at_level("WARNING"):
        assert warn_if_large(n, "tiny on tiny", limit=n - 1)
    assert f"tiny on tiny has {n / 1e6:.1f} M parameters" in caplog.text


@pytest.mark.parametrize("name", ["adam", "adamw", "sgd"])
def test_the_fused_optimizer_takes_the_default_step(name: str) -> None:
    """The trainer's fused Adam/AdamW/SGD on a channels-last network (as every 2D backbone is built; autograd's
    gradients share the weights' layout) move the weights as PyTorch's default loop does, to float32 rounding."""
    from training.trainer import build_optimizer

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.ReLU(), torch.nn.Conv2d(4, 8, 3),
                              torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(8, 3))
    nets = [net.to(memory_format=torch.channels_last), copy.deepcopy(net)]
    assert not nets[0][2].weight.is_contiguous(), "the layout case is not exercised"
    fused = build_optimizer(_cfg(optimizer=name, lr=0.05, weight_decay=1e-3), nets[0].parameters())
    default = build_optimizer(_cfg(optimizer=name, lr=0.05, weight_decay=1e-3), nets[1].parameters())
    for group in default.param_groups:
        group["fused"] = False  # the default loop (read at each step)
    assert fused.defaults["fused"]
    x, y = torch.randn(6, 1, 9, 9), torch.tensor([0, 1, 2, 0, 1, 2])
    for _ in range(3):
        for model, opt in zip(nets, (fused, default)):
            opt.zero_grad(set_to_none=True)
            torch.nn.functional.cross_entropy(model(x), y).backward()
            opt.step()
    for mine, theirs in zip(nets[0].parameters(), nets[1].parameters()):
        torch.testing.assert_close(mine, theirs, rtol=1e-5, atol=1e-6)
