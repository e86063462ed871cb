"""The dry version of an experiment's settings (``advaudio experiment NAME --dry-run``): the same data sets,
front-ends, backbones, defenses and attacks, with a handful of steps, iterations and queries, few clips, short clips.

Every value here is only ever lowered (a config that asks for fewer keeps its own):

- attacks: ``steps``, ``max_iterations`` (ART's ``max_iter``) 2, ``binary_search_steps`` and ``restarts`` 1, NES's
  ``n_samples`` 2 and ``max_queries`` 8, EoT's ``eot_samples`` 2 (:data:`ATTACK_CAPS`);
- end-to-end front-ends: ``n_fft`` 64, ``hop`` 32, ``n_mels`` 16, ``n_scales`` 8 (:data:`FRONTEND_CAPS`); the
  full-size check (:mod:`defense.dryrun_models`) runs every front-end at its real settings instead;
- clips: :data:`CLIP_SAMPLES` samples (more where an attack or front-end window needs them, never more than the
  real clip), a training epoch, two seeds;
- evaluation: two clips, two budgets, ε* to 50 %, 20 bootstrap resamples, CERTIFY with 8 + 16 draws, two
  over-the-air channel draws, every clip attacked (``base_set: all``: a model trained for one epoch classifies few
  clips correctly, and an attack with an empty base set would never run).
"""
from __future__ import annotations

import copy
from typing import Any, Mapping

ATTACK_CAPS = {"steps": 2, "max_iterations": 2, "max_iter": 2, "binary_search_steps": 1, "restarts": 1,
               "n_samples": 2, "max_queries": 8, "eot_samples": 2}
FRONTEND_CAPS = {"n_fft": 64, "hop": 32, "n_mels": 16, "n_scales": 8}
EVAL_CAPS = {"n_examples": 2, "n_budgets": 2, "wavs": 1, "unbounded_steps": 2, "monotone_sample": 2, "n_boot": 20,
             "certify_n0": 8, "certify_n": 16, "griffin_lim_iters": 2, "targeted_per_class": 1, "max_recordings": 2,
             "over_the_air_draws": 2}
EVAL_FLOORS = {"eps_rtol": 0.5}
CLIP_SAMPLES = 1024
"""Samples of an end-to-end clip (at least twice the widest window of a front-end or attack)."""
WINDOW_KEYS = ("n_fft", "fft_sizes")
EPOCHS = 1
SEEDS = 2


def lowered(cfg: Mapping[str, Any], caps: Mapping[str, int]) -> dict[str, Any]:
    """A copy of ``cfg`` with every integer under a key of ``caps`` (at any depth) lowered to its cap."""
    out = copy.deepcopy(dict(cfg))
    for key, value in out.items():
        if isinstance(value, Mapping):
            out[key] = lowered(value, caps)
        elif key in caps and _count(value) and value > caps[key]:
            out[key] = caps[key]
    return out


def capped(cfg: Mapping[str, Any], caps: Mapping[str, int], prefix: str) -> dict[str, Any]:
    """The dotted overrides (``prefix`` + key path) that turn ``cfg`` into :func:`lowered` ``cfg``."""
    out: dict[str, Any] = {}
    for key, value in cfg.items():
        if isinstance(value, Mapping):
            out.update(capped(value, caps, f"{prefix}{key}."))
        elif key in caps and _count(value) and value > caps[key]:
            out[f"{prefix}{key}"] = caps[key]
    return out


def dry_evaluation(evaluation: Mapping[str, Any], clip_samples: int) -> dict[str, Any]:
    """An ``evaluation:`` mapping made dry (caps, floors, an SNR trim that fits the short clip, every clip attacked
    where the settings have ``base_set``)."""
    out = lowered(evaluation, EVAL_CAPS)
    for key, floor in EVAL_FLOORS.items():
        if key in out:
            out[key] = max(out[key], floor)
    if "snr_trim" in out:
        out["snr_trim"] = min(int(out["snr_trim"]), clip_samples // 8)
    if "base_set" in out:
        out["base_set"] = "all"
    return out


def widest_window(*cfgs: Any) -> int:
    """The largest integer under a key of :data:`WINDOW_KEYS` (a front-end's ``n_fft``, C&W multi-scale's
    ``fft_sizes``) anywhere in ``cfgs``; 0 if none."""
    found = 0
    for cfg in cfgs:
        if isinstance(cfg, Mapping):
            for key, value in cfg.items():
                if key in WINDOW_KEYS:
                    found = max([found, *[v for v in (value if isinstance(value, list) else [value]) if _count(v)]])
                found = max(found, widest_window(value))
        elif isinstance(cfg, list):
            found = max([found, *(widest_window(v) for v in cfg)])
    return found


def clip_seconds(dataset: Mapping[str, Any], window: int) -> float:
    """An end-to-end clip's length for ``dataset``: :data:`CLIP_SAMPLES`, or twice ``window`` if longer, never more
    than the real clip."""
    rate = int(dataset["sample_rate"])
    return min(float(dataset["clip_seconds"]), max(CLIP_SAMPLES, 2 * window) / rate)


def _count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
