"""Seed 004's pitch-shift augmentation (factors {0.75, 0.9, 1.15, 1.5}), applied to training clips.

The shift is done by resampling in the time domain ("vari-speed", as a tape played faster or
slower): the clip is read as if sampled at ``factor * sr`` and resampled to ``sr`` with
``torchaudio.functional.resample`` (factor approximated by a fraction with denominator <= 64), so
every frequency is multiplied by ``factor`` and the duration divided by it; the result is cropped
or zero-padded at the end back to the clip length. (``torchaudio.functional.pitch_shift`` keeps
the duration with a phase vocoder, but smears transients and takes ~14 s for one second of audio
at a non-integer semitone step, so it is not used.)
"""
from __future__ import annotations

from dataclasses import dataclass, field
from fractions import Fraction

import torch
import torch.nn.functional as F
import torchaudio.functional as AF
from torch import Tensor

from training.data.base import ClipSet
from victims.schema import between, check_domains

SEED_004_FACTORS = (0.75, 0.9, 1.15, 1.5)
CHUNK = 64


@dataclass
class AugmentOptions:
    """The ``dataset.augment`` config mapping.

    Attributes:
        pitch_factors: frequency factors; ``[]`` = no augmentation, seed 004 uses
            ``[0.75, 0.9, 1.15, 1.5]``.
        keep_original: keep the unshifted clips next to the shifted copies.
    """

    pitch_factors: list[float] = field(default_factory=list, metadata=between(0.25, 4.0, each=True))
    keep_original: bool = True

    def __post_init__(self) -> None:
        check_domains(self, "dataset.augment")


def pitch_shift(waves: Tensor, factor: float) -> Tensor:
    """Multiply every frequency in ``waves`` by ``factor``, keeping the length.

    Args:
        waves: ``(..., T)`` waveforms (any device).
        factor: frequency factor (> 1 raises the pitch).

    Returns:
        ``(..., T)`` shifted waveforms, clipped to ``[-1, 1]``.
    """
    ratio = Fraction(factor).limit_denominator(64)
    chunks = waves.reshape(-1, waves.shape[-1]).split(CHUNK)
    shifted = torch.cat([AF.resample(c, ratio.numerator, ratio.denominator) for c in chunks])
    shifted = shifted.reshape(*waves.shape[:-1], shifted.shape[-1])
    length = waves.shape[-1]
    shifted = shifted[..., :length] if shifted.shape[-1] >= length else F.pad(shifted, (0, length - shifted.shape[-1]))
    return shifted.clamp(-1.0, 1.0)


def augment_pitch(clips: ClipSet, opts: AugmentOptions) -> ClipSet:
    """``clips`` plus one pitch-shifted copy per factor; copies keep their source's label, group
    (so a split by group can never separate them) and fold, and are named ``<name>@pitch<factor>``."""
    if not opts.pitch_factors:
        return clips
    parts = [clips] if opts.keep_original else []
    for factor in opts.pitch_factors:
        parts.append(ClipSet(pitch_shift(clips.waves, factor), clips.labels, clips.groups, clips.folds,
                             list(clips.class_names), clips.sample_rate,
                             [f"{n}@pitch{factor:g}" for n in clips.names]))
    return ClipSet(torch.cat([p.waves for p in parts]), torch.cat([p.labels for p in parts]),
                   torch.cat([p.groups for p in parts]), torch.cat([p.folds for p in parts]),
                   list(clips.class_names), clips.sample_rate, [n for p in parts for n in p.names])
