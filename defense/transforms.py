"""Input-transform defenses: a fixed transformation applied to the input at inference, registered in
:data:`TRANSFORMS` and wrapped around a trained victim by :class:`defense.defended_victim.TransformedVictim`.

Audio papers propose such preprocessing as defenses (resampling, bit-depth quantisation, MP3-like band
limiting, additive noise, median filtering of the spectrogram). Athalye, Carlini & Wagner (2018),
"Obfuscated gradients give a false sense of security", showed that attacks unaware of the transform
overstate the robustness it gives: a non-differentiable transform (quantisation) hides the gradient,
and a random one (noise) makes single-draw gradients noisy. Each transform therefore says, as data,
whether it is random (EoT averages over its draws) and whether autograd through it gives a useful
gradient, and offers a differentiable stand-in (:meth:`InputTransform.approximation`) for BPDA.

Shapes are preserved: waveforms ``(B, 1, T)`` in ``[-1, 1]`` (waveform outputs are clipped to that
box, as a PCM writer would store them); representations ``(B, 1, F, frames)`` in the victim's
normalised units.
"""
from __future__ import annotations

import math
from abc import ABC, abstractmethod
from typing import Any, ClassVar, Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from defense.channel import load_channel
from victims.registry import Registry
from victims.victim import DOMAINS

TRANSFORMS: Registry = Registry("input transform")


class InputTransform(nn.Module, ABC):
    """Base of the input transforms.

    Attributes:
        domain: where the transform acts: ``"waveform"`` (before the front-end) or ``"representation"``
            (on the normalised representation, before the backbone).
        random: every call draws fresh randomness (EoT, Athalye et al. 2018 Sec. 4.3, averages over it).
        differentiable: autograd through :meth:`forward` gives a useful gradient; where it does not
            (zero or sparse gradients), BPDA (Athalye et al. 2018 Sec. 4.1) replaces the backward pass.
    """

    domain: str = "waveform"
    random: ClassVar[bool] = False
    differentiable: ClassVar[bool] = True

    @abstractmethod
    def forward(self, x: Tensor) -> Tensor:
        """The transform as deployed (one random draw for a random transform)."""

    def approximation(self, x: Tensor) -> Tensor:
        """A differentiable ``g(x) ≈ forward(x)`` whose gradient BPDA uses (default: the identity)."""
        return x


def _positive(name: str, value: float) -> float:
    if not (isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
    return float(value)


def _check_wave(x: Tensor, what: str) -> None:
    if x.dim() != 3 or x.shape[1] != 1:
        raise ValueError(f"{what} acts on waveforms (B, 1, T), got shape {tuple(x.shape)}")


def _clip_wave(x: Tensor) -> Tensor:
    """The waveform box ``[-1, 1]`` (gradient 1 inside it)."""
    return x.clamp(-1.0, 1.0)


@TRANSFORMS.register("resample")
class Resample(InputTransform):
    """Resample down to ``rate`` Hz and back up to ``sample_rate`` (``torchaudio.functional.resample``:
    windowed-sinc interpolation, Hann window, 6 zero crossings, roll-off 0.99), then crop to the input
    length: removes the content above ``rate / 2``. Linear, hence differentiable.

    Args:
        sample_rate: the victim's waveform rate in Hz (passed by :func:`defense.defended_victim.defend`).
        rate: the intermediate rate in Hz, below ``sample_rate``.
    """

    def __init__(self, sample_rate: int, rate: int) -> None:
        super().__init__()
        if not isinstance(rate, int) or isinstance(rate, bool) or not 0 < rate < int(sample_rate):
            raise ValueError(f"rate must be an integer in (0, sample_rate={sample_rate}) Hz, got {rate!r}")
        self.sample_rate, self.rate = int(sample_rate), rate

    def forward(self, x: Tensor) -> Tensor:
        from torchaudio.functional import resample

        _check_wave(x, "resample")
        back = resample(resample(x, self.sample_rate, self.rate), self.rate, self.sample_rate)
        n = x.shape[-1]
        return _clip_wave(F.pad(back, (0, max(n - back.shape[-1], 0)))[..., :n])


@TRANSFORMS.register("quantize")
class Quantize(InputTransform):
    """Bit-depth quantisation: ``clip(round(x · 2^(bits−1)) / 2^(bits−1), −1, 1)`` (a PCM writer at
    ``bits`` bits). ``torch.round`` has zero gradient almost everywhere, so autograd sees a flat function
    (the obfuscated gradient of Athalye et al. 2018); BPDA's approximation is the identity, ``q(x) ≈ x``.

    Args:
        bits: bit depth, 1 to 24.
    """

    differentiable = False

    def __init__(self, bits: int) -> None:
        super().__init__()
        if not isinstance(bits, int) or isinstance(bits, bool) or not 1 <= bits <= 24:
            raise ValueError(f"bits must be an integer in [1, 24], got {bits!r}")
        self.bits = bits

    def forward(self, x: Tensor) -> Tensor:
        _check_wave(x, "quantize")
        levels = 2.0 ** (self.bits - 1)
        return _clip_wave(torch.round(x * levels) / levels)


@TRANSFORMS.register("lowpass")
class Lowpass(InputTransform):
    """Brick-wall band limiting at ``cutoff_hz`` (the cut-off MP3 encoders apply at low bit rates): the
    real FFT of each clip with every bin above ``cutoff_hz`` set to zero, transformed back. The FFT is
    circular, so the ends of a clip are filtered as if it wrapped round. Linear, hence differentiable.

    Args:
        sample_rate: the victim's waveform rate in Hz.
        cutoff_hz: highest frequency kept, in ``(0, sample_rate / 2)``.
    """

    def __init__(self, sample_rate: int, cutoff_hz: float) -> None:
        super().__init__()
        cutoff = _positive("cutoff_hz", cutoff_hz)
        if cutoff >= sample_rate / 2:
            raise ValueError(f"cutoff_hz must be below the Nyquist frequency {sample_rate / 2:g} Hz, got {cutoff_hz}")
        self.sample_rate, self.cutoff_hz = int(sample_rate), cutoff

    def forward(self, x: Tensor) -> Tensor:
        _check_wave(x, "lowpass")
        n = x.shape[-1]
        spec = torch.fft.rfft(x, dim=-1)
        freqs = torch.fft.rfftfreq(n, d=1.0 / self.sample_rate).to(x.device)
        return _clip_wave(torch.fft.irfft(spec * (freqs <= self.cutoff_hz), n=n, dim=-1))


@TRANSFORMS.register("gaussian_noise")
class GaussianNoise(InputTransform):
    """Additive Gaussian noise ``x + N(0, sigma²)``, a fresh draw every call (random, differentiable:
    the gradient is the identity). In the waveform domain the result is clipped to ``[-1, 1]`` unless
    ``clip`` is false (randomized smoothing: Cohen et al. 2019 certify the unclipped noise).

    Args:
        sigma: noise standard deviation (waveform units, or per-band standard deviations of the
            normalised representation).
        domain: ``"waveform"`` or ``"representation"``.
        clip: clip a noisy waveform to ``[-1, 1]``.
    """

    random = True

    def __init__(self, sigma: float, domain: str = "waveform", clip: bool = True) -> None:
        super().__init__()
        if domain not in DOMAINS:
            raise ValueError(f"unknown domain '{domain}'; known: {', '.join(DOMAINS)}")
        self.sigma = _positive("sigma", sigma)
        self.domain = domain
        self.clip = bool(clip)

    def forward(self, x: Tensor) -> Tensor:
        noisy = x + self.sigma * torch.randn_like(x)
        return _clip_wave(noisy) if self.domain == "waveform" and self.clip else noisy


@TRANSFORMS.register("median")
class Median(InputTransform):
    """``kernel × kernel`` median filter of the representation (frequency × time), edges padded by
    repeating the border value (``scipy.ndimage.median_filter``'s ``mode="nearest"``).

    The median routes each output's gradient to one input of its window, so most inputs get none:
    ``differentiable`` is ``False``, and BPDA's approximation is the ``kernel × kernel`` mean filter
    over the same windows (a smooth filter with the median's support).

    Args:
        kernel: odd window size ≥ 3.
    """

    domain = "representation"
    differentiable = False

    def __init__(self, kernel: int = 3) -> None:
        super().__init__()
        if not isinstance(kernel, int) or isinstance(kernel, bool) or kernel < 3 or kernel % 2 == 0:
            raise ValueError(f"kernel must be an odd integer >= 3, got {kernel!r}")
        self.kernel = kernel

    def _windows(self, x: Tensor) -> Tensor:
        """``(B, kernel², F·frames)`` the values of each output's window."""
        if x.dim() != 4 or x.shape[1] != 1:
            raise ValueError(f"median acts on representations (B, 1, F, frames), got shape {tuple(x.shape)}")
        pad = self.kernel // 2
        return F.unfold(F.pad(x, (pad, pad, pad, pad), mode="replicate"), self.kernel)

    def forward(self, x: Tensor) -> Tensor:
        return self._windows(x).median(dim=1).values.view_as(x)

    def approximation(self, x: Tensor) -> Tensor:
        return self._windows(x).mean(dim=1).view_as(x)


@TRANSFORMS.register("room")
class Room(InputTransform):
    """Over-the-air playback (:class:`defense.channel.RoomChannel`): the loudspeaker's band, a room's impulse
    response and background noise, a fresh draw per clip and call (random: EoT over it is the attacker who
    optimises for the room, Qin et al. 2019 Sec. 5). Linear in the waveform up to the noise level and the
    final clip, hence differentiable.

    Args:
        sample_rate: the victim's waveform rate in Hz.
        channel: a ``configs/channel`` option name, or a mapping of its keys.
    """

    random = True

    def __init__(self, sample_rate: int, channel: str | Mapping[str, Any] = "room") -> None:
        super().__init__()
        self.channel = load_channel(channel, sample_rate)

    def forward(self, x: Tensor) -> Tensor:
        _check_wave(x, "room")
        return self.channel(x)
