"""One-file use: a checkpoint, an input WAV and an attack → an adversarial WAV.

The clip is cut or zero-padded to the victim's clip length. Waveform-domain attacks (seed 000) write
their result directly; a representation-domain attack is turned back into a waveform where the
representation has an inverse (STFT-dB: the clean clip's phase, seed 003; mel-dB: Griffin-Lim).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import soundfile as sf
import torch

from attacks import create_attack
from evaluation.audio_out import check_audible, to_waveforms
from evaluation.metrics import snr_db
from training.checkpoints import load_victim
from training.data.audio import fix_length, read_audio
from victims.registry import ConfigError
from victims.victim import Victim

log = logging.getLogger(__name__)


@dataclass
class Crafted:
    """What :func:`craft_file` did: labels and confidences before/after, SNR and the output path."""

    before: str
    before_confidence: float
    after: str
    after_confidence: float
    success: bool
    snr_db: float
    output: Path


def resolve_class(victim: Victim, target: str) -> int:
    """A class given by name or index; an unknown one is a one-line ConfigError."""
    if target in victim.class_names:
        return victim.class_names.index(target)
    if target.isdigit() and int(target) < victim.num_classes:
        return int(target)
    raise ConfigError(f"unknown target class '{target}'; known: {', '.join(victim.class_names)}")


def craft_file(checkpoint: Path, source: Path, output: Path, attack_cfg: dict[str, Any],
               target: str | None = None, device: str = "cpu") -> Crafted:
    """Attack one audio file and write the adversarial waveform as a WAV at the victim's rate.

    Raises:
        ConfigError: unknown target class, or a representation-domain attack on a representation with no
            inverse (checked before attacking).
        AudioError, CheckpointError: unreadable input file or checkpoint.
    """
    victim = load_victim(checkpoint, map_location=device)
    raw = read_audio(source, victim.sample_rate)
    if raw.shape[0] != victim.num_samples:
        log.warning("%s has %d samples; the victim takes %d: cut/padded", source, raw.shape[0], victim.num_samples)
    wave = torch.from_numpy(fix_length(raw, victim.num_samples)).view(1, 1, -1).to(device)
    kwargs = {k: v for k, v in attack_cfg.items() if k != "name"}
    if target is not None:
        kwargs["targeted"] = True
    attack = create_attack(attack_cfg["name"], **kwargs)
    check_audible(victim, attack.domain)
    with torch.no_grad():
        probs = victim(wave).softmax(-1)[0]
    label = int(probs.argmax())
    targets = torch.tensor([resolve_class(victim, target)], device=device) if target is not None else None
    result = attack(victim, wave, torch.tensor([label], device=device), targets=targets)
    _, adv = to_waveforms(victim, wave, result.adversarial[0], attack.domain)
    adv = adv.clamp(-1.0, 1.0)
    with torch.no_grad():
        adv_probs = victim(adv).softmax(-1)[0]
    new = int(adv_probs.argmax())
    output.parent.mkdir(parents=True, exist_ok=True)
    sf.write(output, adv.flatten().cpu().numpy(), victim.sample_rate, subtype="FLOAT")
    success = new == int(targets[0]) if targets is not None else new != label
    return Crafted(victim.class_names[label], float(probs[label]), victim.class_names[new], float(adv_probs[new]),
                   success, float(snr_db(wave.cpu(), adv.cpu())[0]), output)
