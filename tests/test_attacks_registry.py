"""Every attack config in ``configs/attack/`` on the tiny victim, in both domains (STYLE example 9).

Each YAML is built with ``ATTACKS.create(name, **cfg)`` (a few test-time caps on iterations) and
run with three budgets. Checks: result shapes ``(K, N)``; fixed-budget results within their
budget; adversarial inputs within the victim's bounds; the victim's train/eval mode restored; in
the waveform domain the attack moves the waveform and fools the victim on some example (the
gradient flows through the front-end); targeted variants hit their target on most examples.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from attacks import ATTACKS
from attacks.base import FAMILIES, Attack
from attacks.losses import log_odds
from tiny import trained_victim, tones
from defense.config import CONFIG_ROOT, read_yaml
from victims.registry import ConfigError

CONFIGS = sorted((CONFIG_ROOT / "attack").glob("*.yaml"))
DOMAINS = ("representation", "waveform")
# Test-time caps applied where a config sets these keys (top level or an ART ``params`` dict).
CAPS = {"steps": 20, "max_iter": 20, "max_iterations": 20, "binary_search_steps": 2, "max_queries": 2000}
# Per-config overrides: seed 000's learning rates and clips are tuned for 500 steps on real audio.
OVERRIDES: dict[str, dict[str, Any]] = {
    "pgdn": {"lr": 0.02},
    "cw_seed000": {"learning_rate": 0.01, "clip_eps": 0.3},
    "cw_multiscale": {"learning_rate": 0.01, "clip_eps": 0.3},
    "cw_l2": {"learning_rate": 0.1},
    "lbfgs": {"initial_const": 1.0},
    "fmn_l0": {"steps": 60},  # L0's constraint grows by about one entry per step from 1
    "square_linf": {"max_queries": 300},  # each query is one step of a random search: keep the test short
    "square_l2": {"max_queries": 300},
    "cw_perceptual": {"max_iterations": 150, "learning_rate": 0.03},  # a minimum-distance search needs its steps
}
SINGLE_STEP = {"fgsm"}  # one step cannot be expected to reach a target; it must move towards it
# Budgets per (norm, domain); the largest is where the waveform check expects some success.
BUDGETS = {("linf", "representation"): [0.05, 0.3, 1.5], ("linf", "waveform"): [0.01, 0.05, 0.2],
           ("l2", "representation"): [0.5, 3.0, 15.0], ("l2", "waveform"): [0.1, 0.5, 3.0],
           ("l0", "representation"): [5.0, 20.0, 100.0], ("l0", "waveform"): [5.0, 20.0, 100.0],
           ("perceptual", "waveform"): [1.0, 10.0, 300.0]}
UNSUPPORTED = {("art_jsma", "representation"): "ART's SaliencyMapMethod takes only scalar clip values"}
NO_GRADIENT = {"noise"}  # attacks that do not aim at the decision boundary at all


def _config(path: Path, domain: str, **extra: Any) -> tuple[str, dict[str, Any]]:
    cfg = read_yaml(path)
    name = cfg.pop("name")
    for key, cap in CAPS.items():
        if key in cfg and cfg[key] > cap:
            cfg[key] = cap
        if key in cfg.get("params", {}) and cfg["params"][key] > cap:
            cfg["params"][key] = cap
    cfg.update(OVERRIDES.get(path.stem, {}))
    cfg.update(domain=domain, **extra)
    return name, cfg


def _build(path: Path, domain: str, **extra: Any) -> Attack:
    """Build the attack of a config; a domain the attack class does not declare is a skip."""
    name, cfg = _config(path, domain, **extra)
    if domain not in ATTACKS.get(name).domains:
        pytest.skip(f"{path.stem} declares domains {ATTACKS.get(name).domains}, not {domain}")
    return ATTACKS.create(name, **cfg)


def test_every_registered_attack_has_a_config() -> None:
    named = {read_yaml(p)["name"] for p in CONFIGS}
    assert set(ATTACKS.names()) <= named, f"attacks without a config: {set(ATTACKS.names()) - named}"


FAMILY_AND_NORM = {  # what each configured attack is in the literature, written out for every config
    "apgd_ce": ("iterative", "l2"), "apgd_ce_linf": ("iterative", "linf"), "apgd_dlr": ("iterative", "l2"),
    "art_deepfool": ("minimum_norm", "l2"), "art_jsma": ("minimum_norm", "l0"), "art_pgd": ("iterative", "linf"),
    "bim_a": ("iterative", "l2"), "bim_b": ("iterative", "l2"), "cw_l2": ("minimum_norm", "l2"),
    "cw_perceptual": ("minimum_norm", "perceptual"),
    "cw_multiscale": ("minimum_norm", "l2"), "cw_seed000": ("minimum_norm", "l2"),
    "deepfool_l2": ("minimum_norm", "l2"), "deepfool_linf": ("minimum_norm", "linf"), "fgsm": ("single_step", "linf"),
    "fmn_l0": ("minimum_norm", "l0"), "fmn_l2": ("minimum_norm", "l2"), "fmn_linf": ("minimum_norm", "linf"),
    "jsma": ("minimum_norm", "l0"), "lbfgs": ("minimum_norm", "l2"), "nes": ("black_box", "linf"),
    "nes_pia": ("black_box", "linf"), "noise": ("baseline", "l2"), "pgd_l2": ("iterative", "l2"),
    "pgd_linf": ("iterative", "linf"), "pgd_perceptual": ("iterative", "perceptual"), "pgdn": ("iterative", "linf"), "square_l2": ("black_box", "l2"),
    "square_linf": ("black_box", "linf"),
}


@pytest.mark.timeout(60)
@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_attack_declares_its_family_and_norm(path: Path) -> None:
    """Registry metadata replaces name prefixes: tables and sanity checks read ``family`` and ``norm``. Each config
    is built in its own domain (a waveform-only attack too); a domain its class does not declare is refused."""
    assert path.stem in FAMILY_AND_NORM, f"{path.stem}: add its family and norm to FAMILY_AND_NORM"
    name, cfg = _config(path, read_yaml(path).get("domain", "representation"))
    declared = ATTACKS.get(name).domains
    if cfg["domain"] not in declared:
        cfg["domain"] = declared[0]
    attack = ATTACKS.create(name, **cfg)
    assert attack.family in FAMILIES and attack.norm in ("l2", "linf", "l0", "perceptual")
    assert (attack.family, attack.norm) == FAMILY_AND_NORM[path.stem]
    for other in set(DOMAINS) - set(declared):
        with pytest.raises(ConfigError, match=f"works in the {declared[0]} domain only"):
            ATTACKS.create(name, **{**cfg, "domain": other})


@pytest.mark.parametrize("domain", DOMAINS)
@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_attack_config_runs(path: Path, domain: str) -> None:
    if (path.stem, domain) in UNSUPPORTED:
        pytest.skip(UNSUPPORTED[path.stem, domain])
    victim = trained_victim()
    wave, labels = tones(2, seed=3)
    attack = _build(path, domain)
    budgets = BUDGETS[(attack.norm, domain)]
    victim.train()
    result = attack(victim, wave, labels, epsilons=budgets)
    assert victim.training and all(m.training for m in victim.modules())
    n = len(labels)
    assert result.success.shape == (3, n) and result.norms.shape == (3, n)
    assert result.iterations.shape == (3, n) and result.queries.shape == (3, n)
    assert result.adversarial.shape == (3, *result.clean.shape)
    bounds = victim.bounds(domain)
    for adv in result.adversarial:
        assert bounds.contains(adv).all(), f"{path.stem} leaves the {domain} bounds"
    if attack.fixed_budget:
        eps = torch.tensor(budgets)[:, None]
        assert (result.norms <= eps * (1 + 1e-4) + 1e-6).all(), f"{path.stem} exceeds its budget"
    else:
        assert torch.equal(result.success, result.success & (result.norms <= torch.tensor(budgets)[:, None]))
    if domain == "waveform":
        assert not torch.equal(result.adversarial[-1], result.clean), f"{path.stem} left the waveform unchanged"
        if path.stem in SINGLE_STEP:  # one linear step need not cross the boundary: it must move towards it
            with torch.no_grad():
                before = log_odds(victim(result.clean), labels)
                after = log_odds(victim(result.adversarial[-1]), labels)
            assert (after < before).all(), f"{path.stem} does not lower the true class's log-odds end to end"
        elif path.stem not in NO_GRADIENT:
            assert result.success[-1].any(), f"{path.stem} never fools the victim end to end"


@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_targeted_attack_hits_target(path: Path) -> None:
    domain = read_yaml(path).get("domain", "representation")
    if not _build(path, domain).targetable:
        pytest.skip(f"{path.stem} declares itself untargetable")
    attack = _build(path, domain, targeted=True)
    victim = trained_victim()
    wave, labels = tones(2, seed=3)
    targets = (labels + 1) % victim.num_classes
    budgets = BUDGETS[(attack.norm, domain)] if attack.fixed_budget else None
    result = attack(victim, wave, labels, targets=targets, epsilons=budgets)
    if path.stem in SINGLE_STEP:
        with torch.no_grad():
            clean = victim(wave).softmax(1).gather(1, targets[:, None])
        moved = result.adv_logits[-1].softmax(1).gather(1, targets[:, None])
        assert (moved > clean).all(), f"{path.stem} does not move towards its target"
    else:
        hit = result.adv_logits[-1].argmax(dim=1) == targets
        assert hit.float().mean() >= 0.5, f"{path.stem} hits its target on {int(hit.sum())}/{len(hit)}"
    with pytest.raises(ValueError, match="targeted"):
        attack(victim, wave, labels, epsilons=budgets)
