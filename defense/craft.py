"""One-file use: a checkpoint, an input WAV and an attack → an adversarial WAV.

The clip is cut or zero-padded to the victim's clip length (only that much of the input is decoded).
Waveform-domain attacks (seed 000) write their result directly; a representation-domain attack is
turned back into a waveform where the representation has an inverse (STFT-dB: the clean clip's phase,
seed 003; mel-dB: Griffin-Lim). The output is written whole or not at all.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import soundfile as sf
import torch

from attacks import create_attack
from evaluation.audio_out import check_audible, to_waveforms, write_wav
from evaluation.metrics import snr_db
from training.checkpoints import load_victim
from training.data.audio import fix_length, read_audio
from training.files import writable_folder
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


def check_output(output: Path) -> None:
    """Refuse, before any work, an ``--output`` that is no ``.wav`` name or whose folder cannot be written
    (a missing folder is created).

    Raises:
        ConfigError: for another extension (the file is always WAV data).
        OutputError: for a folder that cannot be created or written.
    """
    if output.suffix.lower() != ".wav":
        raise ConfigError(f"--output {output}: the adversarial file is WAV data; give it a .wav name")
    writable_folder(output.parent, "output folder")


def craft_file(checkpoint: Path, source: Path, output: Path, attack_cfg: dict[str, Any],
               target: str | None = None, device: str = "cpu") -> Crafted:
    """Attack one audio file and write the adversarial waveform as a float WAV at the victim's rate.

    Only the input's first clip length is decoded (a one-hour file is not read whole); a longer input is
    cut and a shorter one zero-padded, with a warning. The output is written whole or not at all.

    Raises:
        ConfigError: an output name other than ``.wav``, unknown target class, or a representation-domain
            attack on a representation with no inverse (checked before attacking).
        OutputError: an output folder that cannot be written (checked first) or a failed write.
        AudioError, CheckpointError: unreadable input file or checkpoint.
    """
    check_output(output)
    victim = load_victim(checkpoint, map_location=device)
    clip_seconds = victim.num_samples / victim.sample_rate
    raw = read_audio(source, victim.sample_rate, first_seconds=clip_seconds)
    seconds = sf.info(str(source)).duration
    if raw.shape[0] < victim.num_samples or seconds > clip_seconds:
        log.warning("%s is %.2f s long; the victim takes %.2f s: %s", source, seconds, clip_seconds,
                    "zero-padded" if raw.shape[0] < victim.num_samples else "its first part is attacked")
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
    write_wav(output, adv.flatten().cpu(), victim.sample_rate, subtype="FLOAT")
    success = new == int(targets[0]) if targets is not None else new != label
    return Crafted(victim.class_names[label], float(probs[label]), victim.class_names[new], float(adv_probs[new]),
                   success, float(snr_db(wave.cpu(), adv.cpu())[0]), output)
