"""One-file use: a checkpoint, an input WAV and an attack → an adversarial WAV.

The clip is cut or zero-padded to the victim's clip length (only that much of the input is decoded).
Waveform-domain attacks (seed 000) write their result directly; a representation-domain attack is
turned back into a waveform where the representation has an inverse (STFT-dB: the clean clip's phase,
seed 003; mel-dB: Griffin-Lim). The output is written whole or not at all.
"""
from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import soundfile as sf
import torch

from attacks import create_attack
from attacks.base import is_adversarial
from attacks.gradient import GradientAttack
from attacks.threat import perturbation_norm
from evaluation.audio_out import check_audible, to_waveforms, write_wav
from evaluation.metrics import snr_db
from training.checkpoints import load_victim
from training.data.audio import fix_length, read_audio
from training.devices import resolve_device
from training.files import check_output_file, writable_folder
from victims.registry import ConfigError
from victims.victim import Victim

log = logging.getLogger(__name__)


@dataclass
class Progress:
    """What a running one-file attack has done so far (:func:`craft_file`'s ``progress`` hook).

    Attributes:
        calls: evaluations of the attacked model (one per iteration for gradient attacks: FGSM, BIM, PGD, PGDn).
        limit: the attack's own most calls when known (a gradient attack's ``steps``), else ``None``.
        seconds: time since the attack started.
        best_snr_db: SNR of the least-perturbed input that fooled the victim so far (waveform attacks).
        best_norm: L2 norm of that input's perturbation in the attack's domain; ``None`` while nothing fooled it.
    """

    calls: int
    limit: int | None
    seconds: float
    best_snr_db: float | None
    best_norm: float | None


ProgressHook = Callable[[Progress], None]


@dataclass
class Crafted:
    """What :func:`craft_file` did.

    Attributes:
        before, before_confidence: the victim's label of the clean clip and its probability.
        after, after_confidence: its label of the adversarial clip (the clean clip's when nothing was tried).
        success: the adversarial clip fools the victim (another label; the target when targeted).
        snr_db: SNR of the adversarial clip (``nan`` when nothing was tried).
        output: the WAV written, ``None`` when the attack failed (nothing is written then).
        calls: evaluations of the attacked model.
        seconds: time the attack ran.
        timed_out: the attack was stopped at ``max_seconds`` (its best fooling input so far is used).
    """

    before: str
    before_confidence: float
    after: str
    after_confidence: float
    success: bool
    snr_db: float
    output: Path | None
    calls: int = 0
    seconds: float = 0.0
    timed_out: bool = False


class _OutOfTime(Exception):
    """Raised from the query hook to end an attack at its time limit."""


class _Watch:
    """Every evaluation of the attacked model: keeps the least-perturbed input that fooled it, reports progress
    and ends the attack at the time limit.

    Args:
        clean: ``(1, ...)`` clean input in the attack's domain.
        label, target: ``(1,)`` the clean label and the target (``None`` when untargeted).
        waveform: the domain is the waveform (progress then carries the SNR).
        limit: the attack's own most calls, if known.
        progress: called after each evaluation.
        max_seconds: raise :class:`_OutOfTime` once this much time has passed.
    """

    def __init__(self, clean: torch.Tensor, label: torch.Tensor, target: torch.Tensor | None, waveform: bool,
                 limit: int | None, progress: ProgressHook | None, max_seconds: float | None) -> None:
        self.clean, self.label, self.target, self.waveform = clean, label, target, waveform
        self.limit, self.progress, self.max_seconds = limit, progress, max_seconds
        self.calls, self.start = 0, time.monotonic()
        self.best: torch.Tensor | None = None
        self.best_norm, self.best_snr = math.inf, None

    @property
    def seconds(self) -> float:
        return time.monotonic() - self.start

    def __call__(self, inputs: torch.Tensor, logits: torch.Tensor) -> None:
        self.calls += 1
        n = len(inputs)
        target = self.target.expand(n) if self.target is not None else None
        fooled = is_adversarial(logits, self.label.expand(n), target)
        if bool(fooled.any()):
            candidates = inputs[fooled]
            norms = perturbation_norm(candidates - self.clean, "l2")
            i = int(norms.argmin())
            if float(norms[i]) < self.best_norm:
                self.best, self.best_norm = candidates[i:i + 1].clone(), float(norms[i])
                if self.waveform:
                    self.best_snr = float(snr_db(self.clean.cpu(), self.best.cpu())[0])
        if self.progress is not None:
            self.progress(Progress(self.calls, self.limit, self.seconds, self.best_snr,
                                   None if self.best is None else self.best_norm))
        if self.max_seconds is not None and self.seconds >= self.max_seconds:
            raise _OutOfTime


def resolve_class(victim: Victim, target: str) -> int:
    """A class given by name or index; an unknown one is a one-line ConfigError."""
    if target in victim.class_names:
        return victim.class_names.index(target)
    if target.isdigit() and int(target) < victim.num_classes:
        return int(target)
    raise ConfigError(f"unknown target class '{target}'; known: {', '.join(victim.class_names)}")


def check_output(output: Path, source: Path | None = None, checkpoint: Path | None = None) -> None:
    """Refuse, before any work, an ``--output`` that is no ``.wav`` name, an existing folder or other non-regular
    file, the ``--input`` or ``--checkpoint`` file itself (also through a link), or in a folder that cannot be
    written (a missing folder is created).

    Raises:
        ConfigError: for another extension (the file is always WAV data).
        OutputError: for any of the others.
    """
    if output.suffix.lower() != ".wav":
        raise ConfigError(f"--output {output}: the adversarial file is WAV data; give it a .wav name")
    reads = {name: path for name, path in (("--input", source), ("--checkpoint", checkpoint)) if path is not None}
    check_output_file(output, "--output", reads)
    writable_folder(output.parent, "output folder")


def craft_file(checkpoint: Path, source: Path, output: Path, attack_cfg: dict[str, Any],
               target: str | None = None, device: str = "cpu", *, progress: ProgressHook | None = None,
               max_seconds: float | None = None) -> Crafted:
    """Attack one audio file and, when the result fools the victim, write it as a float WAV at the victim's rate.

    Only the input's first clip length is decoded (a one-hour file is not read whole); a longer input is
    cut and a shorter one zero-padded, with a warning. The attack's result is used when it fools the victim,
    else the least-perturbed fooling input the attack evaluated on its way (attacks that end on a weaker
    iterate); a failed attack writes nothing. The output is written whole or not at all.

    Args:
        checkpoint, source, output: the victim, the input audio and the WAV to write.
        attack_cfg: the attack's config (``name`` and its keys).
        target: a class name or index: the attack aims at it.
        device: where the victim runs (``--device``).
        progress: called after every evaluation of the attacked model.
        max_seconds: stop the attack after this long and use its least-perturbed fooling input so far.

    Raises:
        ConfigError: an output name other than ``.wav``, a device this machine lacks, a ``max_seconds`` <= 0,
            an unknown target class or the one the victim already predicts, or a representation-domain attack on a
            representation with no inverse (each checked before attacking).
        OutputError: an output path that is a folder, the input or the checkpoint, or in a folder that cannot
            be written (checked first), or a failed write.
        AudioError, CheckpointError: unreadable input file or checkpoint.
    """
    check_output(output, source, checkpoint)
    if max_seconds is not None and not max_seconds > 0:
        raise ConfigError(f"--max-seconds must be > 0, got {max_seconds}")
    dev = resolve_device(device, "--device")
    victim = load_victim(checkpoint, map_location=dev)
    clip_seconds = victim.num_samples / victim.sample_rate
    raw = read_audio(source, victim.sample_rate, first_seconds=clip_seconds)
    seconds = sf.info(str(source)).duration
    if raw.shape[0] < victim.num_samples or seconds > clip_seconds:
        log.warning("%s is %.2f s long; the victim takes %.2f s: %s", source, seconds, clip_seconds,
                    "zero-padded" if raw.shape[0] < victim.num_samples else "its first part is attacked")
    wave = torch.from_numpy(fix_length(raw, victim.num_samples)).view(1, 1, -1).to(dev)
    kwargs = {k: v for k, v in attack_cfg.items() if k != "name"}
    if target is not None:
        kwargs["targeted"] = True
    attack = create_attack(attack_cfg["name"], **kwargs)
    check_audible(victim, attack.domain)
    with torch.no_grad():
        probs = victim(wave).softmax(-1)[0]
    label = int(probs.argmax())
    labels = torch.tensor([label], device=dev)
    targets = torch.tensor([resolve_class(victim, target)], device=dev) if target is not None else None
    if targets is not None and int(targets[0]) == label:
        raise ConfigError(f"the victim already classifies {Path(source).name} as '{victim.class_names[label]}': "
                          "--target names another class")
    watch = _Watch(victim.to_domain(wave, attack.domain), labels, targets, attack.domain == "waveform",
                   attack.steps if isinstance(attack, GradientAttack) else None, progress, max_seconds)
    try:
        found: torch.Tensor | None = attack(victim, wave, labels, targets=targets, on_query=watch).adversarial[0]
    except _OutOfTime:
        found = None
    attempt = None
    for candidate in (c for c in (found, watch.best) if c is not None):
        judged = _judge(victim, wave, candidate, attack.domain, label, targets)
        attempt = judged if attempt is None or judged[2] else attempt
        if judged[2]:
            break
    adv, adv_probs, success = attempt or (None, probs, False)
    new = int(adv_probs.argmax())
    if success:
        write_wav(output, adv.flatten().cpu(), victim.sample_rate, subtype="FLOAT")
    snr = float(snr_db(wave.cpu(), adv.cpu())[0]) if adv is not None else math.nan
    return Crafted(victim.class_names[label], float(probs[label]), victim.class_names[new], float(adv_probs[new]),
                   success, snr, output if success else None, watch.calls, watch.seconds, found is None)


def _judge(victim: Victim, wave: torch.Tensor, candidate: torch.Tensor, domain: str, label: int,
           targets: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor, bool]:
    """A candidate in the attack's domain as the waveform that would be written, the victim's probabilities on
    it, and whether it fools the victim."""
    _, adv = to_waveforms(victim, wave, candidate, domain)
    adv = adv.clamp(-1.0, 1.0)
    with torch.no_grad():
        adv_probs = victim(adv).softmax(-1)[0]
    new = int(adv_probs.argmax())
    return adv, adv_probs, new == int(targets[0]) if targets is not None else new != label
