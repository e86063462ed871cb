"""Over-the-air evaluation: how often an adversarial example still fools the model after being played in a room.

An example's over-the-air success rate is the share of ``K`` channel draws (:class:`defense.channel.RoomChannel`:
loudspeaker band, room impulse response, background noise) after which the model is still fooled — Qin, Carlini,
Cottrell, Goodfellow & Raffel (2019) Sec. 5 count the rooms a targeted example survives; Athalye, Engstrom, Ilyas &
Kwok (2018) the transformations an EoT example survives. Beside it, the clean accuracy through the same draws: a
model that fails on clean room audio is not robust over the air, whatever its attacks do.

Both are means over clips of per-clip shares, with percentile-bootstrap intervals over clips
(:func:`evaluation.stats.ratio_of_sums_interval`: a clip's ``K`` draws stay together in every resample). The draws
come from ``torch.Generator().manual_seed(seed)`` and are paired: clip ``i``'s ``k``-th draw is the same room and
noise for its clean and its adversarial version.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from defense.channel import ChannelDraw, RoomChannel
from evaluation.harness import AttackEvaluation
from evaluation.stats import Interval, ratio_of_sums_interval
from victims.registry import ConfigError
from victims.victim import Victim


@dataclass(frozen=True)
class OverTheAir:
    """Over-the-air results of one attack on one model.

    Attributes:
        draws: channel draws per clip (``K``).
        fooled: ``(N,)`` share of draws after which the adversarial clip still fools the model; ``nan`` for a clip
            the attack did not break (digitally).
        correct: ``(N,)`` share of draws after which the clean clip is classified correctly.
        success: mean of ``fooled`` over the broken clips, with its interval.
        clean_accuracy: mean of ``correct`` over all clips, with its interval.
    """

    draws: int
    fooled: np.ndarray
    correct: np.ndarray
    success: Interval
    clean_accuracy: Interval

    def metrics(self, prefix: str = "ota_") -> dict[str, float]:
        """The two rates with their bounds, the broken clips they rest on and ``K``, as MLflow metrics."""
        out: dict[str, float] = {f"{prefix}draws": float(self.draws),
                                 f"{prefix}broken": float(np.count_nonzero(~np.isnan(self.fooled)))}
        for name, interval in (("success", self.success), ("clean_accuracy", self.clean_accuracy)):
            out.update({f"{prefix}{name}": interval.value, f"{prefix}{name}_low": interval.low,
                        f"{prefix}{name}_high": interval.high})
        return out


def over_the_air(victim: Victim, channel: RoomChannel, clean: Tensor, labels: Tensor, adversarial: Tensor,
                 broken: Tensor, targets: Tensor | None = None, *, draws: int = 16, seed: int = 0,
                 batch_size: int = 64, n_boot: int = 1000, level: float = 0.95) -> OverTheAir:
    """Play every clean and every broken adversarial clip through ``draws`` channel draws and classify them.

    Args:
        victim: the (deployed) model, in eval mode.
        channel: the over-the-air channel at the victim's rate.
        clean, adversarial: ``(N, 1, T)`` waveforms (``adversarial`` is read where ``broken``).
        labels: ``(N,)`` true labels.
        broken: ``(N,)`` bool, the attack fooled the model digitally.
        targets: ``(N,)`` target labels of a targeted attack (fooled = predicted as the target), else ``None``
            (fooled = not predicted as the label).
        draws: channel draws per clip (``K``).
        seed: seed of the draws.
        batch_size: clips per forward pass.
        n_boot, level: bootstrap draws and confidence level of the intervals.

    Raises:
        ConfigError: for ``draws < 1``, mismatched shapes, or a channel at another rate than the victim.
    """
    n = clean.shape[0]
    if not isinstance(draws, int) or isinstance(draws, bool) or draws < 1:
        raise ConfigError(f"over-the-air draws must be an integer >= 1, got {draws!r}")
    if clean.dim() != 3 or adversarial.shape != clean.shape or labels.shape != (n,) or broken.shape != (n,) \
            or (targets is not None and targets.shape != (n,)):
        raise ConfigError(f"over the air needs (N, 1, T) clean and adversarial clips with (N,) labels, broken and "
                          f"targets; got {tuple(clean.shape)}, {tuple(adversarial.shape)}, {tuple(labels.shape)}, "
                          f"{tuple(broken.shape)}, {None if targets is None else tuple(targets.shape)}")
    if channel.sample_rate != victim.sample_rate:
        raise ConfigError(f"the channel is at {channel.sample_rate} Hz, the victim at {victim.sample_rate} Hz")
    device = next(victim.parameters()).device
    broken = broken.bool().cpu()
    generator = torch.Generator().manual_seed(seed)
    correct, fooled = torch.zeros(n), torch.zeros(n)
    for _ in range(draws):
        draw = channel.draw(n, clean.shape[-1], generator=generator)
        correct += _predict(victim, channel, clean, draw, torch.ones(n, dtype=torch.bool), batch_size, device
                            ).eq(labels.cpu())
        pred = _predict(victim, channel, adversarial, draw, broken, batch_size, device)
        hit = pred.eq(targets.cpu()) if targets is not None else pred.ne(labels.cpu())
        fooled += hit & broken
    ones = torch.full((n,), float(draws))
    success = ratio_of_sums_interval(fooled.numpy(), (ones * broken).numpy(), n_boot=n_boot, seed=seed, level=level)
    accuracy = ratio_of_sums_interval(correct.numpy(), ones.numpy(), n_boot=n_boot, seed=seed, level=level)
    share = (fooled / draws).double().numpy()
    share[~broken.numpy()] = np.nan
    return OverTheAir(draws, share, (correct / draws).double().numpy(), success, accuracy)


def _predict(victim: Victim, channel: RoomChannel, waves: Tensor, draw: ChannelDraw, keep: Tensor, batch_size: int,
             device: torch.device) -> Tensor:
    """``(N,)`` predictions of the ``keep`` clips through their draws (``-1`` elsewhere), on the CPU."""
    out = torch.full((waves.shape[0],), -1, dtype=torch.long)
    index = keep.nonzero().flatten()
    with torch.no_grad():
        for chunk in index.split(batch_size) if len(index) else ():
            part = ChannelDraw(draw.index[chunk], None if draw.noise is None else draw.noise[chunk])
            out[chunk] = victim(channel(waves[chunk].to(device), part)).argmax(dim=-1).cpu()
    return out


def over_the_air_of(ev: AttackEvaluation, victim: Victim, channel: RoomChannel, waves: Tensor, *, draws: int = 16,
                    seed: int = 0, batch_size: int = 64, n_boot: int = 1000, level: float = 0.95) -> OverTheAir:
    """:func:`over_the_air` of a waveform attack's evaluation: its adversarial examples at ε* (base set, broken
    within the search range), against all ``waves`` it evaluated (labels ``ev.labels``) for the clean accuracy.

    Raises:
        ConfigError: for a representation-domain attack (nothing to play) or an evaluation without examples.
    """
    if ev.domain != "waveform" or ev.adversarial is None:
        raise ConfigError(f"over the air plays waveforms; attack '{ev.attack}' gave "
                          f"{'no examples' if ev.adversarial is None else ev.domain + '-domain examples'}")
    n = waves.shape[0]
    index = ev.base_index.cpu()
    adversarial = waves.detach().cpu().clone()
    adversarial[index] = ev.adversarial.detach().cpu().to(adversarial.dtype)
    broken = torch.zeros(n, dtype=torch.bool)
    broken[index] = ev.success.cpu()
    targets = None
    if ev.targets is not None:
        targets = torch.full((n,), -1, dtype=torch.long)
        targets[index] = ev.targets.cpu().long()
    return over_the_air(victim, channel, waves.detach().cpu(), ev.labels.cpu(), adversarial, broken, targets,
                        draws=draws, seed=seed, batch_size=batch_size, n_boot=n_boot, level=level)
