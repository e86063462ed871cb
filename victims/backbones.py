"""Backbones: ``(B, 1, F, frames)`` representation → ``(B, num_classes)`` logits.

Every entry of :data:`BACKBONES` is called as ``ctor(num_classes=..., input_shape=(F, frames),
**kwargs)`` and accepts an optional ``checkpoint`` (a local weights file; nothing is downloaded).
The image backbones of seed 004 (GoogLeNet, AlexNet, VGG-16 from torchvision; ResNet-18/34 from
timm; the CIFAR ResNet-56 of :mod:`victims.cifar_resnet`) take one input channel and inputs of any size:
an axis shorter than the architecture's minimum is bilinearly upsampled to it (:class:`MinSize`).
torchvision and timm are imported when one of their models is built: importing them (and the ``torch._dynamo`` that
torchvision loads) takes 1.7 s on a CPU, a quarter of a command's imports (0.5 s where a training loads
``torch._dynamo`` anyway: ``torch.optim`` does), which a model of its own does not need.
The seed papers' own models live in :mod:`victims.seed_models`, the registry and the helpers every model file
shares in :mod:`victims.backbone_base`.
"""
from __future__ import annotations

from typing import Any, Callable

from torch import Tensor, nn

from victims.backbone_base import BACKBONES, MinSize, check_representation, load_weights, state_mismatch, upsample_to
from victims.cifar_resnet import resnet56


def _one_channel_conv(old: nn.Conv2d, init: Callable[[Tensor], Any]) -> nn.Conv2d:
    """A copy of ``old`` with one input channel, its weight initialised by ``init``."""
    conv = nn.Conv2d(1, old.out_channels, old.kernel_size, old.stride, old.padding, bias=old.bias is not None)
    init(conv.weight)
    if conv.bias is not None:
        nn.init.zeros_(conv.bias)
    return conv


@BACKBONES.register("googlenet")
def googlenet(num_classes: int, input_shape: tuple[int, int], dropout: float = 0.2,
              checkpoint: str | None = None) -> nn.Module:
    """GoogLeNet (Szegedy et al. 2015) from torchvision, without auxiliary heads (seed 004).

    Inputs below 15 × 15 are upsampled. ``dropout`` is torchvision's classifier dropout.
    """
    import torchvision

    net = torchvision.models.googlenet(weights=None, aux_logits=False, init_weights=True,
                                       num_classes=num_classes, dropout=dropout)
    net.conv1.conv = _one_channel_conv(net.conv1.conv, lambda w: nn.init.trunc_normal_(w, std=0.01, a=-2, b=2))
    return load_weights(MinSize(net, (15, 15)), checkpoint, "googlenet")


@BACKBONES.register("alexnet")
def alexnet(num_classes: int, input_shape: tuple[int, int], dropout: float = 0.5,
            checkpoint: str | None = None) -> nn.Module:
    """AlexNet (Krizhevsky et al. 2012) from torchvision (seed 004); inputs below 63 × 63 are upsampled."""
    import torchvision

    net = torchvision.models.alexnet(weights=None, num_classes=num_classes, dropout=dropout)
    net.features[0] = _one_channel_conv(net.features[0], lambda w: nn.init.kaiming_uniform_(w, a=5 ** 0.5))
    return load_weights(MinSize(net, (63, 63)), checkpoint, "alexnet")


@BACKBONES.register("vgg16")
def vgg16(num_classes: int, input_shape: tuple[int, int], dropout: float = 0.5,
          checkpoint: str | None = None) -> nn.Module:
    """VGG-16 (Simonyan & Zisserman 2015) from torchvision (seed 004); inputs below 32 × 32 are upsampled."""
    import torchvision

    net = torchvision.models.vgg16(weights=None, num_classes=num_classes, dropout=dropout)
    net.features[0] = _one_channel_conv(
        net.features[0], lambda w: nn.init.kaiming_normal_(w, mode="fan_out", nonlinearity="relu"))
    return load_weights(MinSize(net, (32, 32)), checkpoint, "vgg16")


def _timm_backbone(arch: str, num_classes: int, drop_rate: float, checkpoint: str | None) -> nn.Module:
    import timm

    net = timm.create_model(arch, pretrained=False, in_chans=1, num_classes=num_classes, drop_rate=drop_rate)
    return load_weights(MinSize(net, (1, 1)), checkpoint, arch)


@BACKBONES.register("resnet18")
def resnet18(num_classes: int, input_shape: tuple[int, int], drop_rate: float = 0.0,
             checkpoint: str | None = None) -> nn.Module:
    """ResNet-18 (He et al. 2016) from timm (seed 004); ``drop_rate`` is timm's pre-classifier dropout."""
    return _timm_backbone("resnet18", num_classes, drop_rate, checkpoint)


@BACKBONES.register("resnet34")
def resnet34(num_classes: int, input_shape: tuple[int, int], drop_rate: float = 0.0,
             checkpoint: str | None = None) -> nn.Module:
    """ResNet-34 (He et al. 2016) from timm (seed 004); ``drop_rate`` is timm's pre-classifier dropout."""
    return _timm_backbone("resnet34", num_classes, drop_rate, checkpoint)


@BACKBONES.register("resnet56")
def resnet56_backbone(num_classes: int, input_shape: tuple[int, int], drop_rate: float = 0.0,
                      checkpoint: str | None = None) -> nn.Module:
    """CIFAR ResNet-56 (He et al. 2016, Sec. 4.2; seed 004), the network ``timm.create_model("resnet56")`` builds
    (:mod:`victims.timm_models`), without importing timm."""
    net = resnet56(in_chans=1, num_classes=num_classes, drop_rate=drop_rate)
    return load_weights(MinSize(net, (1, 1)), checkpoint, "resnet56")


from victims import seed_models, wave_models  # noqa: E402,F401  (registration of the seed papers' and waveform models)

__all__ = ["BACKBONES", "MinSize", "check_representation", "load_weights", "state_mismatch", "upsample_to"]
