"""The training loop: any objective, early stopping, AMP on GPU, atomic per-epoch checkpoints, resume.

The loop is objective-agnostic (clean, or an adversarial objective from ``defense/``): it shuffles,
batches, zeroes gradients, calls the objective (which runs forward and backward), and steps the
optimiser. Each epoch ends with validation, an optional metrics callback (MLflow in the CLI), and
an atomic checkpoint holding everything needed to resume with at most one epoch lost. On CPU with a
fixed seed, a run killed and resumed ends with the same weights and metrics as an uninterrupted one.

The best epoch is chosen on clean validation accuracy or, for adversarially trained models, on
validation accuracy under the training objective's own attack, as Rice, Wong & Kolter (2020,
"Overfitting in adversarially robust deep learning") early-stop: robust accuracy can peak at another
epoch than clean accuracy, and clean selection then keeps a less robust model.
"""
from __future__ import annotations

import contextlib
import copy
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from training.checkpoints import load_checkpoint, load_state_into, save_atomic
from training.data.base import ClipSet
from training.devices import DEVICE_PATTERN, DEVICE_SYNTAX, resolve_device
from training.step import AdversarialObjective, CleanObjective, Objective
from victims.registry import ConfigError
from victims.schema import above, at_least, between, check_domains, matching
from victims.victim import Victim

log = logging.getLogger(__name__)
MetricsCallback = Callable[[dict[str, float], int], None]
Criterion = Literal["clean", "robust"]


@dataclass
class TrainConfig:
    """Hyper-parameters of one training run (``configs/train/*.yaml``).

    Attributes:
        epochs: maximum number of epochs.
        batch_size: training mini-batch size.
        optimizer: ``adam``, ``adamw``, ``sgd`` (with momentum) or ``adadelta`` (seed 003).
        lr: learning rate.
        weight_decay: L2 penalty passed to the optimiser.
        momentum: SGD momentum.
        schedule: ``none``, ``step`` (× ``gamma`` at each epoch in ``milestones``; seed 000 uses
            [90] with 0.1) or ``cosine`` (to zero over ``epochs``).
        milestones: epochs at which ``step`` decays the learning rate.
        gamma: decay factor of ``step``.
        patience: stop after this many epochs without a better validation score (``None``: never; 0 would
            stop before the first epoch and is refused).
        select_on: the best epoch's score. ``clean``: validation accuracy, ties broken by the lower
            validation loss. ``robust``: validation accuracy under the objective's own attack
            (``val_robust_accuracy``), ties broken by clean accuracy, then loss. ``auto``: ``robust``
            for an adversarial objective, ``clean`` otherwise.
        amp: bfloat16 autocast on CUDA (ignored on CPU).
        seed: seeds initialisation, shuffling and dropout.
        device: ``auto`` (CUDA if available), ``cpu``, ``cuda[:N]`` or ``mps``; one this machine lacks is refused
            when training starts (:func:`training.devices.resolve_device`), not here: a Ray driver without a GPU
            composes configs for GPU workers.
        eval_batch_size: batch size for validation, test and fitting the normaliser.
    """

    epochs: int = field(default=20, metadata=at_least(1))
    batch_size: int = field(default=32, metadata=at_least(1))
    optimizer: Literal["adam", "adamw", "sgd", "adadelta"] = "adam"
    lr: float = field(default=1e-3, metadata=above(0))
    weight_decay: float = field(default=0.0, metadata=at_least(0))
    momentum: float = field(default=0.9, metadata=between(0, 1, "[)"))
    schedule: Literal["none", "step", "cosine"] = "none"
    milestones: list[int] = field(default_factory=list, metadata=at_least(1, each=True))
    gamma: float = field(default=0.1, metadata=above(0))
    patience: int | None = field(default=5, metadata=at_least(1))
    select_on: Literal["auto", "clean", "robust"] = "auto"
    amp: bool = True
    seed: int = 0
    device: str = field(default="auto", metadata=matching(DEVICE_PATTERN, DEVICE_SYNTAX))
    eval_batch_size: int = field(default=128, metadata=at_least(1))

    def __post_init__(self) -> None:
        check_domains(self, "train")


@dataclass
class TrainResult:
    """Outcome of :func:`train`: the best weights (of ``best_epoch``, chosen on ``criterion``) are loaded
    into ``victim``."""

    victim: Victim
    history: list[dict[str, float]]
    best_epoch: int
    test_accuracy: float
    test_loss: float
    stopped_early: bool
    criterion: Criterion


def batches(clips: ClipSet, batch_size: int, generator: torch.Generator | None = None) -> Iterator[tuple[Tensor, Tensor]]:
    """Yield ``(waves, labels)`` mini-batches, shuffled when a generator is given."""
    n = len(clips)
    order = torch.randperm(n, generator=generator) if generator is not None else torch.arange(n)
    for start in range(0, n, batch_size):
        idx = order[start:start + batch_size]
        yield clips.waves[idx], clips.labels[idx]


@torch.no_grad()
def fit_normalizer(victim: Victim, train: ClipSet, batch_size: int, device: torch.device) -> None:
    """Fit the victim's per-band statistics on the training split only."""
    victim.normalizer.fit(victim.features(w.to(device)) for w, _ in batches(train, batch_size))


@torch.no_grad()
def evaluate(victim: Victim, clips: ClipSet, batch_size: int, device: torch.device) -> tuple[float, float]:
    """``(accuracy, mean cross-entropy)`` of ``victim`` on ``clips`` in eval mode."""
    was_training = victim.training
    victim.eval()
    correct, loss_sum = 0, 0.0
    for w, y in batches(clips, batch_size):
        w, y = w.to(device), y.to(device)
        logits = victim(w).float()
        loss_sum += F.cross_entropy(logits, y, reduction="sum").item()
        correct += (logits.argmax(1) == y).sum().item()
    victim.train(was_training)
    n = max(len(clips), 1)
    return correct / n, loss_sum / n


def selection_criterion(select_on: str, objective: Objective) -> Criterion:
    """Resolve ``TrainConfig.select_on`` for ``objective``.

    Raises:
        ConfigError: ``robust`` for an objective without an attack.
    """
    adversarial = isinstance(objective, AdversarialObjective)
    if select_on == "robust" and not adversarial:
        raise ConfigError(f"train.select_on=robust needs an adversarial defense; {type(objective).__name__} has no attack")
    if select_on == "auto":
        return "robust" if adversarial else "clean"
    return "robust" if select_on == "robust" else "clean"


def evaluate_robust(victim: Victim, objective: AdversarialObjective, clips: ClipSet, batch_size: int,
                    device: torch.device, seed: int) -> float:
    """Accuracy on ``objective``'s adversarial examples of ``clips``, with the random starts drawn from
    ``seed`` (the same every epoch) in a forked RNG, so training randomness is untouched."""
    correct = 0
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        for w, y in batches(clips, batch_size):
            w, y = w.to(device), y.to(device)
            correct += (objective.robust_logits(victim, w, y).argmax(1) == y).sum().item()
    return correct / max(len(clips), 1)


def _score(metrics: dict[str, float], criterion: Criterion) -> tuple[float, ...]:
    clean = (metrics["val_accuracy"], -metrics["val_loss"])
    return (metrics["val_robust_accuracy"], *clean) if criterion == "robust" else clean


def build_optimizer(cfg: TrainConfig, params: Any) -> torch.optim.Optimizer:
    """The configured optimizer, for training and for the cost plan's timed step (:mod:`defense.plan_time`).

    Adam, AdamW and SGD use PyTorch's fused kernels (CPU and CUDA): the same update up to float32 rounding, and on one
    CPU thread 1.0-3x faster per step than the default loop for ResNet-18, 4-12x for VGG-16 and AlexNet, whose dense
    layers hold most of their 57-134 M weights (``benchmarks/optimizer_step.py``). The kernels rely on autograd
    giving each gradient its weight's layout (channels-last weights included). Adadelta has no fused kernel.
    """
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay, fused=True)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay, fused=True)
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay, fused=True)
    return torch.optim.Adadelta(params, lr=cfg.lr, weight_decay=cfg.weight_decay)


def _scheduler(cfg: TrainConfig, opt: torch.optim.Optimizer) -> torch.optim.lr_scheduler.LRScheduler:
    if cfg.schedule == "step":
        return torch.optim.lr_scheduler.MultiStepLR(opt, milestones=list(cfg.milestones), gamma=cfg.gamma)
    if cfg.schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(cfg.epochs, 1))
    return torch.optim.lr_scheduler.LambdaLR(opt, lambda _: 1.0)


def train(victim: Victim, train_set: ClipSet, val_set: ClipSet, test_set: ClipSet, cfg: TrainConfig, *,
          objective: Objective | None = None, checkpoint_path: str | Path | None = None,
          on_epoch: MetricsCallback | None = None, stop_after: int | None = None) -> TrainResult:
    """Train ``victim`` with ``objective`` (clean by default), resuming from ``checkpoint_path`` if present.

    Args:
        victim: freshly built victim (its normaliser is fitted here on ``train_set`` only).
        train_set: training clips.
        val_set: validation clips (early stopping and best-epoch selection).
        test_set: held-out clips, evaluated once with the best weights.
        cfg: hyper-parameters.
        objective: how a batch becomes gradients (``defense.objectives.OBJECTIVES`` names them).
        checkpoint_path: written atomically after every epoch (weights, optimizer, RNG, best weights) but the
            last, whose slim finished state (best weights and history) is written at once instead (a kill in
            between loses that one epoch); an existing file is resumed, a finished one reused without training.
        on_epoch: called with the epoch's metrics and the epoch number.
        stop_after: end the call after this many epochs in total (simulates a kill; for tests).

    Returns:
        :class:`TrainResult` with the best weights loaded into ``victim``.

    Raises:
        ConfigError: ``select_on=robust`` for an objective without an attack, or a checkpoint that
            selects epochs on another criterion.
    """
    objective = objective or CleanObjective()
    criterion = selection_criterion(cfg.select_on, objective)
    attacked = objective if criterion == "robust" and isinstance(objective, AdversarialObjective) else None
    device = resolve_device(cfg.device)
    torch.manual_seed(cfg.seed)
    victim.to(device)
    opt = build_optimizer(cfg, [p for p in victim.parameters() if p.requires_grad])
    sched = _scheduler(cfg, opt)
    state: dict[str, Any] = {"epoch": 0, "best_epoch": 0, "history": [], "since_best": 0, "best_model": None,
                             "criterion": criterion, "finished": False, "stopped_early": False}
    ckpt_path = Path(checkpoint_path) if checkpoint_path else None
    if ckpt_path is not None and ckpt_path.is_file():
        state = _resume(ckpt_path, victim, opt, sched, device)
        if state["criterion"] != criterion:
            raise ConfigError(f"checkpoint {ckpt_path} selects epochs on {state['criterion']} accuracy, this run on "
                              f"{criterion}: set train.select_on={state['criterion']} or use another checkpoint")
        log.info("resumed from %s after epoch %d", ckpt_path, state["epoch"])
    else:
        fit_normalizer(victim, train_set, cfg.eval_batch_size, device)
    use_amp = cfg.amp and device.type == "cuda"

    backward = backward_outside_autocast(device.type)
    stopped_early, interrupted = state["stopped_early"], False
    while not state["finished"] and state["epoch"] < cfg.epochs:
        if stop_after is not None and state["epoch"] >= stop_after:
            interrupted = True
            break
        if _patience_spent(cfg, state):
            stopped_early = True
            break
        epoch = state["epoch"] + 1
        gen = torch.Generator().manual_seed(cfg.seed * 100_003 + epoch)
        victim.train()
        loss_sum, correct, seen = 0.0, 0, 0
        for w, y in batches(train_set, cfg.batch_size, gen):
            w, y = w.to(device, non_blocking=True), y.to(device, non_blocking=True)
            opt.zero_grad(set_to_none=True)
            amp_ctx = torch.autocast("cuda", dtype=torch.bfloat16) if use_amp else contextlib.nullcontext()
            with amp_ctx:
                out = objective(victim, w, y, backward)
            opt.step()
            loss_sum += out.loss.float().item() * len(y)
            correct += (out.logits.argmax(1) == y).sum().item()
            seen += len(y)
        sched.step()
        val_acc, val_loss = evaluate(victim, val_set, cfg.eval_batch_size, device)
        metrics = {"train_loss": loss_sum / max(seen, 1), "train_accuracy": correct / max(seen, 1),
                   "val_loss": val_loss, "val_accuracy": val_acc, "lr": opt.param_groups[0]["lr"]}
        if attacked is not None:
            metrics["val_robust_accuracy"] = evaluate_robust(victim, attacked, val_set, cfg.eval_batch_size,
                                                             device, cfg.seed)
        if not all(math.isfinite(v) for v in metrics.values()):
            raise FloatingPointError(f"non-finite metrics at epoch {epoch}: {metrics}")
        best = state["best_epoch"]
        state["history"].append(metrics)
        state["epoch"] = epoch
        if best == 0 or _score(metrics, criterion) > _score(state["history"][best - 1], criterion):
            state.update(best_epoch=epoch, since_best=0,
                         best_model=copy.deepcopy({k: v.detach().cpu() for k, v in victim.state_dict().items()}))
        else:
            state["since_best"] += 1
        log.info("epoch %d: %s", epoch, ", ".join(f"{k}={v:.4g}" for k, v in metrics.items()))
        if on_epoch is not None:
            on_epoch(metrics, epoch)
        if ckpt_path is not None and not _ends_here(cfg, state, stop_after):
            save_atomic(_training_state(victim, opt, sched, state), ckpt_path)

    if state["best_model"] is not None:
        victim.load_state_dict(state["best_model"])
    if ckpt_path is not None and not interrupted and not state["finished"]:
        save_atomic(_finished_state(victim, state, stopped_early), ckpt_path)
    test_acc, test_loss = evaluate(victim, test_set, cfg.eval_batch_size, device)
    return TrainResult(victim.eval(), state["history"], state["best_epoch"], test_acc, test_loss, stopped_early,
                       criterion)


def backward_outside_autocast(device_type: str) -> Callable[[Tensor], None]:
    """The ``backward`` objectives call: autocast off for the backward pass (PyTorch's AMP recipe: only the
    forward runs under autocast; backward ops then take the dtypes autocast chose for their forward ops)."""

    def backward(loss: Tensor) -> None:
        with torch.autocast(device_type, enabled=False):
            loss.backward()

    return backward


def _ends_here(cfg: TrainConfig, state: dict[str, Any], stop_after: int | None) -> bool:
    """Whether the loop ends after the epoch just run with the finished state saved (the last epoch, or early
    stopping's patience used up and no simulated kill first): its resumable checkpoint would be overwritten at once
    (for a large backbone that checkpoint is four copies of the weights: weights, Adam's two moments, best weights)."""
    if state["epoch"] >= cfg.epochs:
        return True
    return _patience_spent(cfg, state) and (stop_after is None or state["epoch"] < stop_after)


def _patience_spent(cfg: TrainConfig, state: dict[str, Any]) -> bool:
    """Early stopping: ``cfg.patience`` epochs have passed without a better validation score."""
    return cfg.patience is not None and state["since_best"] >= cfg.patience


def _training_state(victim: Victim, opt: torch.optim.Optimizer, sched: Any, state: dict[str, Any]) -> dict[str, Any]:
    return {"spec": victim.spec, "model": victim.state_dict(), "optimizer": opt.state_dict(),
            "scheduler": sched.state_dict(), "rng_cpu": torch.get_rng_state(),
            "rng_cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            **{k: state[k] for k in ("epoch", "best_epoch", "history", "since_best", "best_model", "criterion")}}


def _finished_state(victim: Victim, state: dict[str, Any], stopped_early: bool) -> dict[str, Any]:
    """What a finished run keeps: the best weights and the history (no optimizer, RNG or second weight
    copy), a quarter of an Adam training checkpoint; a rerun reads it instead of training again."""
    return {"spec": victim.spec, "model": victim.state_dict(), "finished": True, "stopped_early": stopped_early,
            **{k: state[k] for k in ("epoch", "best_epoch", "history", "since_best", "criterion")}}


def _resume(path: Path, victim: Victim, opt: torch.optim.Optimizer, sched: Any,
            device: torch.device) -> dict[str, Any]:
    ckpt = load_checkpoint(path, map_location=device)
    load_state_into(victim, ckpt["model"], path)
    finished = bool(ckpt.get("finished", False))
    if not finished:
        opt.load_state_dict(ckpt["optimizer"])
        sched.load_state_dict(ckpt["scheduler"])
        torch.set_rng_state(ckpt["rng_cpu"].cpu())
        if ckpt["rng_cuda"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all([s.cpu() for s in ckpt["rng_cuda"]])
    best = ckpt.get("best_model")
    return {"epoch": ckpt["epoch"], "best_epoch": ckpt["best_epoch"], "history": list(ckpt["history"]),
            "since_best": ckpt["since_best"], "best_model": {k: v.cpu() for k, v in best.items()} if best is not None
            else None, "criterion": ckpt.get("criterion", "clean"), "finished": finished,
            "stopped_early": bool(ckpt.get("stopped_early", False))}
