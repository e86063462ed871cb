"""Koerich et al.'s measurement on one test fold: attack the 2D CNN's dB spectrogram, turn it back into audio,
play the audio to the 1D CNN, and aggregate every segment prediction per recording.

Koerich et al. (2020), Section III: FGSM and BIM perturb the spectrogram the 2D CNN reads (their
code attacks the dB values themselves: BIM ε 0.3, step 0.1, 10 iterations); the perturbed STFT is
inverted with the clean segment's phase kept, the mel spectrogram with Griffin-Lim (Section III-A);
the reconstructed audio is classified by the 1D CNN (Table VI). SNR (their Eq. 3-4) compares the
adversarial reconstruction with the reconstruction of the clean spectrogram; the round trip ("None"
in their Table VII) compares that reconstruction with the original segment.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from attacks import Attack
from evaluation.metrics import snr_db
import experiments.koerich.metrics as A
from experiments.shared import batched_logits
from victims.frontends import FrontEnd
from victims.frontends.spectral import MelDb, StftDb
from victims.inverse import clean_phase, istft_db, mel_db_griffinlim
from victims.registry import ConfigError
from victims.victim import Victim

RECORD = "seed003.json"
"""An evaluation run's per-recording record (:func:`record`); the name is kept from the study's first layout so that
stores logged before read back."""
EVAL_KIND = "seed003_eval"
"""Kind (tag ``advaudio.kind``) of an evaluation run, one per test fold and input; kept from the first layout too."""


def db_view(victim: Victim) -> Victim:
    """The same trained model with its representation domain in the front-end's own units (dB).

    Its backbone is ``normaliser → backbone`` of ``victim`` (shared modules, not copies) and its own
    normaliser is the identity, so an attack in the ``representation`` domain perturbs the dB
    spectrogram, as Koerich et al. do, and the bounds are the front-end's dB range.
    """
    view = Victim(victim.frontend, nn.Sequential(victim.normalizer, victim.backbone), victim.class_names,
                  victim.num_samples, victim.spec)
    return view.to(victim.normalizer.mean.device)


@torch.no_grad()
def reconstruct(frontend: FrontEnd, rep_db: Tensor, wave: Tensor, griffin_lim_iters: int) -> Tensor:
    """Audio ``(B, 1, T)`` (float64, not clipped) from a dB spectrogram ``(B, 1, F, frames)`` of ``wave``.

    STFT-dB: inverse STFT with the clean segment's phase; mel-dB: Griffin-Lim from zero phase with the
    clean segment's reference level (Koerich et al., Section III-A).

    Raises:
        ConfigError: for a front-end with no inverse.
    """
    wave, rep = wave.double(), rep_db.double()
    if isinstance(frontend, StftDb):
        return istft_db(rep, clean_phase(frontend, wave), frontend, wave.shape[-1])
    if isinstance(frontend, MelDb):
        return mel_db_griffinlim(rep, frontend, wave.shape[-1], n_iter=griffin_lim_iters,
                                 ref_db=frontend.reference_db(wave))
    raise ConfigError(f"no waveform inverse for the {type(frontend).__name__} front-end (the study needs STFT-dB "
                      "or mel-dB)")


@dataclass
class Example:
    """One segment kept for listening: the original segment, its clean and adversarial reconstructions, and
    the 2D CNN's predictions on the clean and the adversarial spectrogram."""

    attack: str
    index: int
    source: Tensor
    clean: Tensor
    adversarial: Tensor
    clean_pred: int
    adv_pred: int


@dataclass
class InputOutputs:
    """Per-segment outputs on one spectrogram input: softmax probabilities by condition (``2d/clean``,
    ``2d/<attack>``, ``1d/recon``, ``1d/<attack>``, each ``(N, C)``), SNRs in dB by ``roundtrip`` and
    attack (``(N,)``), and a few examples."""

    probs: dict[str, np.ndarray]
    snr: dict[str, np.ndarray]
    examples: list[Example] = field(default_factory=list)


def run_input(victim2d: Victim, victim1d: Victim, attacks: dict[str, Attack], waves: Tensor, labels: Tensor, *,
              batch_size: int, griffin_lim_iters: int, n_examples: int, controls: dict[str, float] | None = None,
              seed: int = 0) -> InputOutputs:
    """Attack ``victim2d``'s dB spectrogram of every segment, reconstruct, and classify with ``victim1d``.

    Args:
        victim2d: the trained 2D CNN (STFT-dB or mel-dB front-end).
        victim1d: the trained 1D CNN (waveform front-end), same classes.
        attacks: untargeted fixed-budget attacks in the representation domain (their own ``eps``).
        waves: ``(N, 1, T)`` test segments (CPU); labels: ``(N,)``.
        batch_size: segments per step.
        griffin_lim_iters: Griffin-Lim iterations (mel-dB only).
        n_examples: successful examples per attack kept for listening.
        controls: name → ``eps`` of random-sign perturbations ``±eps`` dB on every bin (clipped to the
            front-end's range), measured like an attack: the same L∞ size as FGSM with no aim.
        seed: seeds the random signs.
    """
    device = victim2d.normalizer.mean.device
    view = db_view(victim2d).eval()
    victim1d.eval()
    bounds = view.bounds("representation")
    gen = torch.Generator().manual_seed(seed)
    probs: dict[str, list[np.ndarray]] = {}
    snrs: dict[str, list[np.ndarray]] = {}
    examples: list[Example] = []
    for start in range(0, len(waves), batch_size):
        x, y = waves[start:start + batch_size].to(device), labels[start:start + batch_size].to(device)
        rep = view.to_domain(x, "representation")
        clean_rec = reconstruct(view.frontend, rep, x, griffin_lim_iters)
        with torch.no_grad():
            clean_logits = view.classify(rep)
            out = {"2d/clean": clean_logits, "1d/recon": victim1d(clean_rec.float())}
        snr = {"roundtrip": snr_db(x, clean_rec)}
        for name, attack in attacks.items():
            result = attack(view, x, y)
            adv_rec = reconstruct(view.frontend, result.adversarial[0], x, griffin_lim_iters)
            with torch.no_grad():
                out[f"1d/{name}"] = victim1d(adv_rec.float())
            out[f"2d/{name}"] = result.adv_logits[0]
            snr[name] = snr_db(clean_rec, adv_rec)
            examples += _examples(name, start, x, clean_rec, adv_rec, clean_logits, result.adv_logits[0], y,
                                  n_examples - sum(e.attack == name for e in examples))
        for name, eps in (controls or {}).items():
            signs = torch.randn(rep.shape, generator=gen).sign().to(rep)
            noisy = bounds.clip(rep + eps * signs)
            noisy_rec = reconstruct(view.frontend, noisy, x, griffin_lim_iters)
            with torch.no_grad():
                out[f"2d/{name}"], out[f"1d/{name}"] = view.classify(noisy), victim1d(noisy_rec.float())
            snr[name] = snr_db(clean_rec, noisy_rec)
        for key, logits in out.items():
            probs.setdefault(key, []).append(logits.double().softmax(dim=-1).cpu().numpy())
        for key, value in snr.items():
            snrs.setdefault(key, []).append(value.cpu().numpy())
    return InputOutputs({k: np.concatenate(v) for k, v in probs.items()},
                        {k: np.concatenate(v) for k, v in snrs.items()}, examples)


def _examples(attack: str, start: int, source: Tensor, clean: Tensor, adv: Tensor, clean_logits: Tensor,
              adv_logits: Tensor, labels: Tensor, room: int) -> list[Example]:
    """Up to ``room`` segments of the batch that the 2D CNN got right and the attack turned wrong."""
    clean_pred, adv_pred = clean_logits.argmax(dim=1), adv_logits.argmax(dim=1)
    hits = ((clean_pred == labels) & (adv_pred != labels)).nonzero().flatten()[:max(room, 0)].tolist()
    return [Example(attack, start + i, source[i].cpu(), clean[i].cpu(), adv[i].cpu(), int(clean_pred[i]),
                    int(adv_pred[i])) for i in hits]


def waveform_probs(victim1d: Victim, waves: Tensor, batch_size: int) -> np.ndarray:
    """``(N, C)`` softmax of the 1D CNN on the original segments (Koerich et al.'s Table IV, "Original")."""
    return batched_logits(victim1d, waves, batch_size).double().softmax(dim=-1).numpy()


def choose_recordings(groups: Tensor, labels: Tensor, count: int | None, seed: int) -> Tensor:
    """Indices of every segment of ``count`` recordings drawn class by class in turn (seeded), or all
    segments when ``count`` is ``None`` or at least the number of recordings."""
    ids = groups.unique()
    if count is None or count >= len(ids):
        return torch.arange(len(groups))
    gen = torch.Generator().manual_seed(seed)
    first = torch.stack([(groups == g).nonzero()[0, 0] for g in ids])
    order = torch.randperm(len(ids), generator=gen)
    rec_labels = labels[first][order]
    rank = torch.zeros_like(rec_labels)
    for c in rec_labels.unique():
        hit = rec_labels == c
        rank[hit] = torch.arange(int(hit.sum()))
    chosen = ids[order[torch.argsort(rank * len(ids) + torch.arange(len(ids)), stable=True)][:count]]
    return torch.isin(groups, chosen).nonzero().flatten()


def record(groups: np.ndarray, labels: np.ndarray, probs: dict[str, np.ndarray],
           snr: dict[str, np.ndarray] | None = None) -> dict[str, Any]:
    """The per-recording record logged to MLflow, from which the report rebuilds every cell.

    ``counts[condition][aggregate]``: per-recording numerators of the segment, majority-vote and sum-rule
    accuracies (denominators: ``recordings.segments`` and 1); ``transfer[attack]``: numerator and
    denominator of the transfer rate to the 1D CNN per recording; ``snr[key]``: per-recording count, sum
    and sum of squares of the finite segment SNRs (dB).
    """
    rec = A.recordings(groups, labels)
    out: dict[str, Any] = {"recordings": {"ids": rec.ids.tolist(), "labels": rec.labels.tolist(),
                                          "segments": rec.segments.tolist()},
                           "counts": {k: {a: v.tolist() for a, v in A.accuracy_counts(p, rec).items()}
                                      for k, p in probs.items()}}
    truth = rec.labels[rec.index]
    right = {k: p.argmax(axis=1) == truth for k, p in probs.items()}
    attacks = [k[3:] for k in probs if k.startswith("2d/") and k != "2d/clean" and f"1d/{k[3:]}" in probs]
    out["transfer"] = {}
    for name in attacks:
        num, den = A.transfer_counts(right["2d/clean"] & ~right[f"2d/{name}"], right["1d/recon"],
                                     ~right[f"1d/{name}"], rec)
        out["transfer"][name] = {"num": num.tolist(), "den": den.tolist()}
    out["snr"] = {}
    for key, values in (snr or {}).items():
        finite = np.isfinite(values)
        safe = np.where(finite, values, 0.0)
        out["snr"][key] = {"n": A.per_recording(finite, rec).tolist(), "sum": A.per_recording(safe, rec).tolist(),
                           "sq": A.per_recording(safe * safe, rec).tolist()}
    return out
