"""Attacks: native batched PyTorch attacks on victims, in either domain.

Importing the package registers every attack in :data:`attacks.base.ATTACKS`.
"""
from attacks import art_adapter, cw, deepfool, gradient, jsma, lbfgs, nes, noise  # noqa: F401  (registration)
from attacks.base import ATTACKS, Attack, AttackResult, create_attack

__all__ = ["ATTACKS", "Attack", "AttackResult", "create_attack"]
