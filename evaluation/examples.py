"""Seed 004's Fig. 1: one clip's adversarial representation under each attack, beside the clean one.

Seed 004 (Fig. 1) shows, for one clip and one architecture, the original representation of each front-end and
the adversarial one each attack crafted, with the perturbation's size written under it. Each attack run keeps
its candidates (:func:`log_example`, the artifact ``example.npz``): the first clip of the model's base set (the
same clip for every attack on a model; the grid evaluates every model on the same seeded clips, so where the
models classify it correctly, the same clip for every front-end too) and, when the attack did not break that
one, the first clip it broke. Each holds the clean and the adversarial backbone input (normalised
representation) and, for a waveform attack, both waveforms; the adversarial input is the one at the clip's ε\*,
or at the search range when the attack never broke it. The figure shows the clip broken in the most rows
(:func:`choose_clip`). Runs logged before this artifact existed have none and are left out of the figure.

:func:`write_example_figures` draws one figure per data set, victim and defense (the first training seed) with
a block of rows per representation (:func:`evaluation.plots.adversarial_examples`).
"""
from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import mlflow
import numpy as np
import pandas as pd
import torch
from matplotlib.figure import Figure
from mlflow.tracking import MlflowClient
from torch import Tensor

from attacks.perceptual import NORM as PERCEPTUAL
from attacks.perceptual import perturbation_size
from evaluation import plots
from evaluation.harness import AttackEvaluation, victim_device
from evaluation.report_data import ReportData
from evaluation.tracking import downloaded
from training.files import atomic_write
from victims.victim import Victim

log = logging.getLogger(__name__)
EXAMPLE_ARTIFACT = "example.npz"
"""One clip's clean and adversarial inputs on an attack run (:func:`log_example`)."""
_TEXT = ("label", "adv_label", "domain", "norm")


@dataclass
class Example:
    """One clip attacked once.

    Attributes:
        index: position of the clip among the evaluated clips (the same clips for every model of a grid).
        label: its class name (the model's clean prediction: the clip is in the base set).
        adv_label: the class the model predicts on the adversarial input.
        broken: whether the attack broke the clip within the search range.
        eps_star: the clip's ε* (``inf`` when not broken).
        domain, norm: the attack's domain and norm.
        clean_rep, adv_rep: ``(F, frames)`` clean and adversarial backbone input (normalised representation).
        clean_input, adv_input: ``(T,)`` clean and adversarial waveform of a waveform attack, else ``None``.
        sample_rate: Hz of those waveforms (the perceptual norm's threshold depends on it), else ``None``.
    """

    index: int
    label: str
    adv_label: str
    broken: bool
    eps_star: float
    domain: str
    norm: str
    clean_rep: np.ndarray
    adv_rep: np.ndarray
    clean_input: np.ndarray | None = None
    adv_input: np.ndarray | None = None
    sample_rate: int | None = None

    @property
    def perturbation_norm(self) -> float:
        """‖adversarial − clean‖ in the attack's norm and domain, from the stored arrays (float64)."""
        clean, adv = ((self.clean_rep, self.adv_rep) if self.clean_input is None
                      else (self.clean_input, self.adv_input))
        delta = torch.from_numpy(np.asarray(adv, np.float64) - np.asarray(clean, np.float64)).reshape(1, 1, -1)
        reference = torch.from_numpy(np.asarray(clean, np.float64)).reshape(1, 1, -1)
        rate = None if self.sample_rate is None else int(self.sample_rate)
        return float(perturbation_size(delta, reference, self.norm, rate)[0])

    def norm_text(self) -> str:
        """The perturbation's norm as the figure prints it, e.g. ``‖δ‖₂ = 0.8123 (representation)``."""
        value = self.perturbation_norm
        symbol = "‖δ‖" + {"l2": "₂", "linf": "∞", "l0": "₀", PERCEPTUAL: "ₚ"}.get(self.norm, f"_{self.norm}")
        text = f"{value:.0f}" if self.norm == "l0" else f"{value:.4g}"
        return f"{symbol} = {text} ({self.domain})"


def make_examples(ev: AttackEvaluation, victim: Victim, base_waves: Tensor) -> list[Example]:
    """The candidate clips of an evaluation for Fig. 1: the first clip of its base set and, when the attack did
    not break that one, the first clip it broke (none for an empty base set or an evaluation without adversarial
    inputs, one read back from its record).

    Args:
        ev: the evaluation (with ``adversarial``).
        victim: the model attacked; its front-end and normaliser give the representations (no input transform:
            a transform-defended model shows the representation its transform receives or protects).
        base_waves: ``(n, 1, T)`` the base set's clean waveforms, in the order of ``ev``'s per-example fields.
    """
    if ev.adversarial is None or ev.eps_star.numel() == 0:
        return []
    broken = ev.success.nonzero().flatten()
    chosen = [0] + ([int(broken[0])] if broken.numel() and int(broken[0]) != 0 else [])
    device = victim_device(victim)
    waves = base_waves[chosen].to(device)
    adversarial = ev.adversarial[chosen].to(device)
    with torch.no_grad():
        clean_rep = victim.normalizer(victim.frontend(waves))
        adv_rep = adversarial if ev.domain == "representation" else \
            victim.normalizer(victim.frontend(adversarial.to(waves.dtype)))
    names, on_wave = victim.class_names, ev.domain == "waveform"
    return [Example(index=int(ev.base_index[i]), label=names[int(ev.labels[ev.base_index[i]])],
                    adv_label=names[int(ev.adv_logits[i].argmax())], broken=bool(ev.success[i]),
                    eps_star=float(ev.eps_star[i]), domain=ev.domain, norm=ev.norm, clean_rep=_plane(clean_rep[j]),
                    adv_rep=_plane(adv_rep[j]), clean_input=_numpy(waves[j]) if on_wave else None,
                    adv_input=_numpy(adversarial[j]) if on_wave else None,
                    sample_rate=victim.sample_rate if on_wave else None)
            for j, i in enumerate(chosen)]


def _plane(rep: Tensor) -> np.ndarray:
    """``(1, F, frames)`` → ``(F, frames)`` float32."""
    return _numpy(rep).reshape(rep.shape[-2], rep.shape[-1])


def _numpy(x: Tensor) -> np.ndarray:
    """Flat float32 copy on the CPU (a waveform ``(1, T)`` → ``(T,)``)."""
    return x.reshape(-1).float().cpu().numpy()


def log_example(ev: AttackEvaluation, victim: Victim, base_waves: Tensor) -> None:
    """Keep :func:`make_examples` as ``example.npz`` (each field stacked over the clips) on the active (attack)
    run; nothing when there is none."""
    examples = make_examples(ev, victim, base_waves)
    if not examples:
        return
    fields = [vars(e) for e in examples]
    arrays = {k: np.stack([np.asarray(f[k]) for f in fields]) for k, v in fields[0].items() if v is not None}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / EXAMPLE_ARTIFACT
        np.savez_compressed(path, **arrays)
        mlflow.log_artifact(str(path))


def load_examples(client: MlflowClient, run_id: str) -> list[Example]:
    """The examples an attack run kept (none for a run logged before ``example.npz``)."""
    if EXAMPLE_ARTIFACT not in {a.path for a in client.list_artifacts(run_id)}:
        return []
    with downloaded(run_id, EXAMPLE_ARTIFACT, client) as path, np.load(path, allow_pickle=False) as data:
        fields = {k: data[k] for k in data.files}
    if fields["index"].ndim == 0:  # one clip, unstacked (the first format, before the candidates)
        fields = {k: v[None] for k, v in fields.items()}
    return [Example(index=int(fields["index"][j]), broken=bool(fields["broken"][j]),
                    eps_star=float(fields["eps_star"][j]), **{k: str(fields[k][j]) for k in _TEXT},
                    **{k: v[j] for k, v in fields.items() if k not in (*_TEXT, "index", "broken", "eps_star")})
            for j in range(len(fields["index"]))]


def choose_clip(candidates: Sequence[Sequence[Example]]) -> int | None:
    """The clip a figure shows: of the clips the rows kept, the one broken in the most rows, then kept in the most
    rows, then the first (``None`` without candidates). Every row keeps its model's first base-set clip, so that
    one is chosen where the attacks broke it."""
    kept = [{e.index: e for e in row} for row in candidates]
    clips = sorted({i for row in kept for i in row})
    if not clips:
        return None
    return max(clips, key=lambda c: (sum(c in row and row[c].broken for row in kept), sum(c in row for row in kept),
                                     -c))


def pick(examples: Sequence[Example], clip: int | None) -> Example | None:
    """A row's example of ``clip``; a row without it shows its first broken clip, else its first one."""
    for example in examples:
        if example.index == clip:
            return example
    return next((e for e in examples if e.broken), examples[0] if examples else None)


def figure_groups(data: ReportData) -> dict[tuple[str, str, str], pd.DataFrame]:
    """The attack runs of each figure: ``(dataset, victim, defense)`` → runs of the first training seed, sorted by
    representation and, within one, in the order the grid ran its attacks."""
    runs = data.of_kind("attack")
    runs = runs[runs["seed"] == data.seeds[0]] if not runs.empty else runs
    return {key: group.sort_values(["frontend", "start_time"], kind="stable")
            for key, group in runs.groupby(["dataset", "victim", "defense"], sort=True)}


def example_figures(data: ReportData, tracking_uri: str | None = None) -> Iterator[tuple[str, Figure]]:
    """Seed 004's Fig. 1 for each data set, victim and defense: ``(file stem, figure)``, the stem
    ``fig1_<dataset>_<victim>_<defense>``, on the clip :func:`choose_clip` picks. Runs without an example are left
    out; a figure without any is skipped.

    Args:
        data: the experiment's runs (:func:`evaluation.report_data.collect`).
        tracking_uri: the store the runs live in (default: the one MLflow is pointed at).
    """
    client = MlflowClient(tracking_uri)
    seed = data.seeds[0] if data.seeds else "0"
    for (dataset, victim, defense), runs in figure_groups(data).items():
        found = [(str(run["frontend"]), _attack_label(run), load_examples(client, run["run_id"]))
                 for _, run in runs.iterrows()]
        clip = choose_clip([examples for *_, examples in found])
        rows = [(frontend, attack, example) for frontend, attack, examples in found
                if (example := pick(examples, clip)) is not None]
        if rows:
            yield (f"fig1_{dataset}_{victim}_{defense}", plots.adversarial_examples(
                rows, title=f"{dataset} / {victim} / {defense}, seed {seed}: one clip under every attack "
                            "(seed 004, Fig. 1)"))


def write_example_figures(data: ReportData, out_dir: Path, tracking_uri: str | None = None) -> list[Path]:
    """Write :func:`example_figures` as PNG files to ``out_dir``; returns the paths written."""
    paths = []
    for stem, fig in example_figures(data, tracking_uri):
        paths.append(atomic_write(Path(out_dir) / f"{stem}.png",
                                  lambda handle, fig=fig: fig.savefig(handle, format="png", dpi=80), "report figure"))
    log.info("wrote %d example figures to %s", len(paths), out_dir)
    return paths


def _attack_label(run: pd.Series) -> str:
    """The attack's name, with its mode for an inference-time defense's run."""
    mode = run.get("mode", "")
    return f"{run['attack']} ({mode})" if isinstance(mode, str) and mode else str(run["attack"])
