"""Raw-waveform classifiers beyond the seed papers' own, registered in :data:`victims.backbone_base.BACKBONES`.

- ``m5``: the M5 network of Dai et al. 2017 ("Very deep convolutional neural networks for raw
  waveforms", ICASSP, Table 1), a small raw-audio CNN. Seed 001 attacks a raw-waveform model
  (Jeong & Lim's DenseNet on audio, "dense-wav") beside log-mel ones; M5 stands in for it where seed
  003's gammatone CNN (``abdoli_cnn1d``, ~15× the cost per clip at 8 kHz) does not fit a CPU budget.
"""
from __future__ import annotations

from torch import Tensor, nn

from victims.backbone_base import BACKBONES, load_weights, waveform_input


class M5(nn.Module):
    """M5 (Dai et al. 2017, Table 1) on waveforms ``(B, 1, 1, T)`` → logits ``(B, num_classes)``.

    Conv [80/4, w] → MaxPool 4 → Conv [3, w] → MaxPool 4 → Conv [3, 2w] → MaxPool 4 → Conv [3, 4w] →
    MaxPool 4 → global average pooling → linear; every convolution is followed by batch normalisation
    and ReLU (w = 128 in the paper). Waveforms shorter than :attr:`min_samples` (the shortest length
    every pooling leaves non-empty) are zero-padded equally on both sides.

    Args:
        num_classes: outputs.
        input_shape: ``(1, T)`` the network is built for; other lengths are refused.
        width: channels of the first two convolutions (``w``).
    """

    min_samples = 80 + 4 * (4 ** 4 - 1)

    def __init__(self, num_classes: int, input_shape: tuple[int, int], width: int = 128) -> None:
        super().__init__()
        if int(input_shape[0]) != 1:
            raise ValueError(f"m5 takes the waveform front-end's (1, T) output, got {tuple(input_shape)}")
        if width < 1:
            raise ValueError(f"m5 width must be >= 1, got {width}")
        self.num_samples = int(input_shape[1])
        layers: list[nn.Module] = []
        for cin, cout, kernel, stride in ((1, width, 80, 4), (width, width, 3, 1), (width, 2 * width, 3, 1),
                                          (2 * width, 4 * width, 3, 1)):
            layers += [nn.Conv1d(cin, cout, kernel, stride, padding=kernel // 2 if kernel == 3 else 0),
                       nn.BatchNorm1d(cout), nn.ReLU(), nn.MaxPool1d(4)]
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(4 * width, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        wave = waveform_input(x, self.num_samples, self.min_samples, "m5")
        return self.classifier(self.features(wave).mean(dim=2))


@BACKBONES.register("m5")
def m5(num_classes: int, input_shape: tuple[int, int], width: int = 128, checkpoint: str | None = None) -> nn.Module:
    """Dai et al.'s M5 raw-waveform CNN (see :class:`M5`)."""
    return load_weights(M5(num_classes, input_shape, width), checkpoint, "m5")
