"""The CIFAR-style ResNet of He et al. 2016 (Sec. 4.2).

:func:`resnet56` builds the 3-stage network with 9 basic blocks per stage (16/32/64 channels, 6·9 + 2 = 56 layers)
and the parameter-free "option A" shortcut (stride-2 subsampling plus zero channel padding), which gives the paper's
0.85 M parameters (853,018 for 10 classes and 3 input channels). Seed 004 trains it on spectrograms and scalograms.

Plain PyTorch: building it imports neither timm nor torchvision (with them, 1.7 s more of a command's start on a CPU).
:mod:`victims.timm_models` registers :func:`resnet56` in timm's model registry, so that
``timm.create_model("resnet56", in_chans=1, num_classes=10)`` builds it too.
"""
from __future__ import annotations

from typing import Any

import torch.nn.functional as F
from torch import Tensor, nn


class BasicBlock(nn.Module):
    """Two 3 × 3 conv-BN layers with an identity (option A) shortcut."""

    def __init__(self, in_planes: int, planes: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.stride = stride
        self.pad = planes - in_planes

    def shortcut(self, x: Tensor) -> Tensor:
        """Subsample by ``stride`` and zero-pad the new channels (no parameters)."""
        if self.stride > 1:
            x = x[:, :, ::self.stride, ::self.stride]
        if self.pad:
            x = F.pad(x, (0, 0, 0, 0, self.pad // 2, self.pad - self.pad // 2))
        return x

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class CifarResNet(nn.Module):
    """3 × ``depth_per_stage`` basic blocks, global average pool, linear classifier.

    Args:
        depth_per_stage: blocks per stage (9 for ResNet-56).
        num_classes: outputs.
        in_chans: input channels.
        drop_rate: dropout before the classifier (timm's convention).
    """

    def __init__(self, depth_per_stage: int = 9, num_classes: int = 10, in_chans: int = 3,
                 drop_rate: float = 0.0) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.drop_rate = drop_rate
        self.conv1 = nn.Conv2d(in_chans, 16, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        stages, in_planes = [], 16
        for planes, stride in ((16, 1), (32, 2), (64, 2)):
            blocks = []
            for i in range(depth_per_stage):
                blocks.append(BasicBlock(in_planes, planes, stride if i == 0 else 1))
                in_planes = planes
            stages.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3 = stages
        self.fc = nn.Linear(64, num_classes)
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(m.weight)

    def forward(self, x: Tensor) -> Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        x = x.mean(dim=(2, 3))
        return self.fc(F.dropout(x, self.drop_rate, self.training))


def resnet56(pretrained: bool = False, **kwargs: Any) -> CifarResNet:
    """The CIFAR ResNet-56 (``kwargs``: :class:`CifarResNet`'s but ``depth_per_stage``), with timm's entry-point
    signature; there are no pretrained weights to download.

    Raises:
        ValueError: if ``pretrained`` is requested.
    """
    if pretrained:
        raise ValueError("resnet56 has no pretrained weights here; pass a local checkpoint instead")
    for key in ("pretrained_cfg", "pretrained_cfg_overlay", "cache_dir"):
        kwargs.pop(key, None)
    return CifarResNet(depth_per_stage=9, **kwargs)
