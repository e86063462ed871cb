"""Adversarial examples as WAV files to listen to: the clean clip, the adversarial clip and the
perturbation (SPEC "Reports"; seed 000 publishes its waveform attacks as audio, seed 003 transfers
spectrogram attacks to the waveform).

A waveform-domain attack already yields audio. A representation-domain attack yields a perturbed
(normalised) representation, which is brought back to audio with seed 003's inverses
(:mod:`victims.inverse`): the iSTFT with the clean clip's phase kept for STFT-dB, Griffin-Lim for
mel-dB. Other representations (CWT, tonnetz, appended features) have no inverse here.

The perturbation file is amplified so that its peak is ``perturbation_peak`` (default 0.5 of full
scale): at typical SNRs it would be inaudible as is. The gain is returned and put in the file name.
"""
from __future__ import annotations

import io
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
from torch import Tensor

from training.files import atomic_write
from victims.frontends.spectral import MelDb, StftDb
from victims.registry import ConfigError
from victims.inverse import clean_phase, istft_db, mel_db_griffinlim
from victims.victim import Domain, Victim

log = logging.getLogger(__name__)
SUBTYPES = ("PCM_16", "PCM_24", "FLOAT")


@dataclass(frozen=True)
class AdversarialAudio:
    """The files of one example and how the perturbation file was scaled.

    Attributes:
        original, adversarial, perturbation: paths of the three WAV files.
        gain: factor applied to the perturbation in its file (1 if it is zero).
        snr_db: 20·log10(‖x‖₂ / ‖δ‖₂) of the written (unclipped) signals; ``inf`` for δ = 0.
    """

    original: Path
    adversarial: Path
    perturbation: Path
    gain: float
    snr_db: float


def _mono(wave: Tensor | np.ndarray) -> np.ndarray:
    arr = wave.detach().cpu().double().numpy() if isinstance(wave, Tensor) else np.asarray(wave, np.float64)
    arr = arr.reshape(-1) if arr.ndim == 1 or all(s == 1 for s in arr.shape[:-1]) else arr
    if arr.ndim != 1:
        raise ValueError(f"a waveform must be (T,), (1, T) or (1, 1, T), got shape {arr.shape}")
    return arr


def write_wav(path: Path, wave: Tensor | np.ndarray, sample_rate: int, subtype: str = "PCM_16") -> Path:
    """Write one mono waveform, whole or not at all; samples outside ``[-1, 1]`` are clipped with a logged
    warning.

    Args:
        path: output file (missing folders are created, logged).
        wave: ``(T,)``, ``(1, T)`` or ``(1, 1, T)``.
        sample_rate: rate in Hz.
        subtype: ``"PCM_16"`` (default), ``"PCM_24"`` or ``"FLOAT"`` (no quantisation).

    Raises:
        ValueError: on a non-finite sample, a bad shape, rate or subtype.
        OutputError: if the file cannot be written (no file is left behind).
    """
    if subtype not in SUBTYPES:
        raise ValueError(f"unknown WAV subtype '{subtype}'; known: {', '.join(SUBTYPES)}")
    if sample_rate <= 0:
        raise ValueError(f"sample_rate must be > 0, got {sample_rate}")
    arr = _mono(wave)
    if not np.isfinite(arr).all():
        raise ValueError(f"waveform for {path} has NaN or infinite samples")
    over = int((np.abs(arr) > 1.0).sum())
    if over:
        log.warning("%s: clipped %d of %d samples to [-1, 1] (peak %.3f)", path, over, arr.size, np.abs(arr).max())
        arr = np.clip(arr, -1.0, 1.0)
    buffer = io.BytesIO()  # encoded in memory: libsndfile reports a failed disk write without its reason
    sf.write(buffer, arr.astype(np.float32), int(sample_rate), subtype=subtype, format="WAV")
    return atomic_write(path, lambda handle: handle.write(buffer.getbuffer()), "WAV file")


def write_adversarial_wavs(out_dir: Path, stem: str, clean: Tensor | np.ndarray, adversarial: Tensor | np.ndarray,
                           sample_rate: int, *, perturbation_peak: float = 0.5,
                           subtype: str = "PCM_16") -> AdversarialAudio:
    """Write ``<stem>_original.wav``, ``<stem>_adversarial.wav`` and ``<stem>_perturbation_x<gain>.wav``.

    Args:
        out_dir: folder for the files.
        stem: file-name prefix (e.g. ``"bim_a_0003_guitar_to_organ"``).
        clean, adversarial: the two waveforms, same length.
        sample_rate: rate in Hz.
        perturbation_peak: peak level the perturbation is scaled to, in ``(0, 1]``.
        subtype: WAV sample format (see :func:`write_wav`).
    """
    x, x_adv = _mono(clean), _mono(adversarial)
    if x.shape != x_adv.shape:
        raise ValueError(f"clean {x.shape} and adversarial {x_adv.shape} differ in length")
    if not 0 < perturbation_peak <= 1:
        raise ValueError(f"perturbation_peak must lie in (0, 1], got {perturbation_peak}")
    delta = x_adv - x
    peak = float(np.abs(delta).max()) if delta.size else 0.0
    gain = perturbation_peak / peak if peak > 0 else 1.0
    snr = float(20 * np.log10(np.linalg.norm(x) / np.linalg.norm(delta))) if peak > 0 else float("inf")
    out_dir = Path(out_dir)
    return AdversarialAudio(
        original=write_wav(out_dir / f"{stem}_original.wav", x, sample_rate, subtype),
        adversarial=write_wav(out_dir / f"{stem}_adversarial.wav", x_adv, sample_rate, subtype),
        perturbation=write_wav(out_dir / f"{stem}_perturbation_x{gain:.3g}.wav", gain * delta, sample_rate, subtype),
        gain=gain, snr_db=snr)


@torch.no_grad()
def to_waveforms(victim: Victim, wave: Tensor, adversarial: Tensor, domain: Domain) -> tuple[Tensor, Tensor]:
    """The ``(reference, adversarial)`` waveforms ``(B, 1, T)`` to listen to.

    Waveform domain: ``(wave, adversarial)``. Representation domain: ``adversarial`` is the backbone's
    (normalised) input; it is mapped back to front-end units and inverted. For STFT-dB the clean
    clip's phase is kept (seed 003) and the reference is the clean clip itself (the round trip is
    exact up to float error); for mel-dB both the clean and the adversarial representation go
    through the normaliser round trip and Griffin-Lim (deterministic, zero initial phase), so their
    difference holds the attack and not the phase estimate; Griffin-Lim is not smooth, so even a
    small perturbation can move the phase estimate audibly.

    Raises:
        ConfigError: for a representation with no inverse (CWT, tonnetz, appended features).
    """
    check_audible(victim, domain)
    wave = wave.to(adversarial.device)
    if domain == "waveform":
        return wave, adversarial
    frontend = victim.frontend
    rep = victim.normalizer.inverse(adversarial)
    length = wave.shape[-1]
    if isinstance(frontend, StftDb):
        return wave, istft_db(rep, clean_phase(frontend, wave), frontend, length)
    ref_db = frontend.reference_db(wave)  # MelDb: check_audible admits nothing else
    clean_rep = victim.normalizer.inverse(victim.represent(wave))  # the same path as ``rep``
    return (mel_db_griffinlim(clean_rep, frontend, length, ref_db=ref_db),
            mel_db_griffinlim(rep, frontend, length, ref_db=ref_db))


def why_inaudible(victim: Victim, domain: Domain) -> str | None:
    """Why an attack in ``domain`` on ``victim`` cannot be written as audio, or ``None`` if it can:
    waveform attacks always can; representation attacks need an STFT-dB front-end with hop < n_fft
    (kept phase) or a mel-dB one (Griffin-Lim)."""
    frontend = victim.frontend
    if domain == "waveform":
        return None
    if domain != "representation":
        return f"unknown domain '{domain}'; known: waveform, representation"
    if isinstance(frontend, StftDb) and frontend.hop >= frontend.n_fft:
        return f"an STFT with hop {frontend.hop} >= n_fft {frontend.n_fft} has no inverse"
    if isinstance(frontend, (StftDb, MelDb)):
        return None
    return (f"no waveform inverse for the {type(frontend).__name__} representation: a representation attack on it "
            "cannot be written as audio; attack the waveform (domain=waveform) or use an STFT-dB or mel-dB front-end")


def check_audible(victim: Victim, domain: Domain) -> None:
    """Raise :func:`why_inaudible`'s reason as a one-line ConfigError (check before attacking, not after)."""
    reason = why_inaudible(victim, domain)
    if reason is not None:
        raise ConfigError(reason)
