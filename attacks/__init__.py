"""Attacks: native batched PyTorch attacks on victims, in either domain.

Importing the package registers every attack in :data:`attacks.base.ATTACKS`.
"""
from attacks import (  # noqa: F401  (registration)
    apgd, art_adapter, cw, deepfool, fmn, gradient, jsma, lbfgs, nes, noise, perceptual, perceptual_cw,
    square,
)
from attacks.base import ATTACKS, Attack, AttackResult, create_attack

__all__ = ["ATTACKS", "Attack", "AttackResult", "create_attack"]
