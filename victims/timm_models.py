"""Importing this module registers the framework's own networks in timm's model registry: the CIFAR ResNet-56 of
:mod:`victims.cifar_resnet` (He et al. 2016 Sec. 4.2, seed 004), so that
``timm.create_model("resnet56", pretrained=False, in_chans=1, num_classes=10)`` builds it.

The backbone registry (:mod:`victims.backbones`) builds it without timm; this is for code that builds models through
timm's factory.
"""
from __future__ import annotations

from timm.models import register_model

from victims.cifar_resnet import resnet56

register_model(resnet56)

__all__ = ["resnet56"]
