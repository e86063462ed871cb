"""The seed papers' own classifiers, registered in :data:`victims.backbone_base.BACKBONES`.

- ``averagepool_cnn``: Prinz & Flexer's AveragePoolCNN for instrument classification (seed 000,
  Fig. 1), on mel spectrograms.
- ``koerich_cnn2d``: the 2D CNN of seed 003 (Table I), on STFT or mel spectrograms.
- ``abdoli_cnn1d``: the 1D CNN of seed 003 (Table II), after Abdoli, Cardinal & Koerich 2019,
  whose first layer is a frozen gammatone filter bank; it takes the ``waveform`` front-end's
  ``(B, 1, 1, T)`` output.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from victims.backbone_base import BACKBONES, check_representation, load_weights, upsample_to, waveform_input


def erb_space(low_hz: float, high_hz: float, n: int) -> Tensor:
    """``n`` centre frequencies equally spaced on the ERB-number scale (Glasberg & Moore 1990).

    Raises:
        ValueError: unless ``0 < low_hz < high_hz``.
    """
    if not 0 < low_hz < high_hz:
        raise ValueError(f"gammatone band must satisfy 0 < low_hz < high_hz, got {low_hz}, {high_hz}")
    low, high = (21.4 * math.log10(4.37e-3 * f + 1) for f in (low_hz, high_hz))
    erb_numbers = torch.linspace(low, high, n, dtype=torch.float64)
    return (10 ** (erb_numbers / 21.4) - 1) / 4.37e-3


def gammatone_filters(sample_rate: int, n_filters: int, length: int, low_hz: float, high_hz: float,
                      order: int = 4) -> Tensor:
    """4th-order gammatone impulse responses at ERB-spaced centre frequencies, ``(n_filters, length)``.

    ``g(t) = t^(order-1) · exp(-2π · 1.019 · ERB(fc) · t) · cos(2π · fc · t)`` with
    ``ERB(f) = 24.7 · (4.37 f / 1000 + 1)`` (Patterson et al. 1992; Glasberg & Moore 1990), each
    scaled to a peak magnitude response of 1. Float64.

    Raises:
        ValueError: if ``high_hz`` is not below the Nyquist frequency or the band is empty.
    """
    if high_hz >= sample_rate / 2:
        raise ValueError(f"gammatone high_hz {high_hz} must be below Nyquist ({sample_rate / 2} Hz)")
    fc = erb_space(low_hz, high_hz, n_filters).unsqueeze(1)
    t = torch.arange(length, dtype=torch.float64) / sample_rate
    bandwidth = 1.019 * 24.7 * (4.37e-3 * fc + 1)
    g = t ** (order - 1) * torch.exp(-2 * math.pi * bandwidth * t) * torch.cos(2 * math.pi * fc * t)
    gain = torch.fft.rfft(g, n=8 * length).abs().amax(dim=1, keepdim=True)
    return g / gain


def _conv_relu_bn(cin: int, cout: int, kernel: int, stride: int = 1) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, kernel, stride, kernel // 2), nn.ReLU(), nn.BatchNorm2d(cout)]


class AveragePoolCNN(nn.Module):
    """Seed 000's instrument classifier (Prinz & Flexer; ~1.29 M parameters for 12 classes).

    Conv → ReLU → BatchNorm blocks with average pooling and dropout, two 1 × 1 convolutions, and
    a global pooling that averages over frequency and takes the maximum over time. Padding equals
    ``kernel // 2`` (which is the stride for the 5 × 5/2 and 3 × 3/1 layers, as the paper states).
    The last 1 × 1 convolution is left linear: the figure lists a ReLU there, but a ReLU on the
    class scores zeroes the gradient of every negative class score, which attacks rely on.

    Inputs need at least 15 bands and 35 frames; shorter spectrograms are padded circularly in
    time as the paper describes (repetitions of equal length before and after), and fewer bands
    are bilinearly upsampled.

    Args:
        num_classes: outputs (12 in seed 000).
    """

    min_frames = 35
    min_bands = 15

    def __init__(self, num_classes: int) -> None:
        super().__init__()
        self.features = nn.Sequential(
            *_conv_relu_bn(1, 64, 5, 2), *_conv_relu_bn(64, 64, 3), nn.AvgPool2d(2, 2), nn.Dropout(0.3),
            *_conv_relu_bn(64, 128, 3), *_conv_relu_bn(128, 128, 3), nn.AvgPool2d((2, 3), (2, 3)), nn.Dropout(0.3),
            *_conv_relu_bn(128, 256, 3), *_conv_relu_bn(256, 256, 3), nn.AvgPool2d((2, 3), (2, 3)), nn.Dropout(0.3),
            *_conv_relu_bn(256, 512, 1), nn.Dropout(0.5),
            nn.Conv2d(512, num_classes, 1),
        )

    def forward(self, x: Tensor) -> Tensor:
        check_representation(x)
        x = upsample_to(x, (self.min_bands, 1))
        frames = x.shape[3]
        if frames < self.min_frames:
            left = (self.min_frames - frames) // 2
            idx = torch.arange(-left, self.min_frames - left, device=x.device) % frames
            x = x.index_select(3, idx)
        return self.features(x).mean(dim=2).amax(dim=2)


class KoerichCNN2d(nn.Module):
    """Seed 003's 2D CNN (Table I): Conv32-Conv32-MaxPool-Conv64-Conv64-MaxPool-Dense-Dropout-output.

    3 × 3 "valid" convolutions, each followed by ReLU and batch normalisation; both poolings have
    stride 2. Table I gives no pooling window; its output sizes fix it: 2 for the first pooling and
    4 for the second (122 × 209 → 60 × 103 and 26 × 209 → 12 × 103 only fit a window of 4). The
    dense layer's input size follows ``input_shape``. The output layer returns logits (the paper's
    softmax is applied by the loss). Inputs with fewer than 20 bands or frames are bilinearly
    upsampled to 20, the smallest size the two poolings leave non-empty.

    Args:
        num_classes: outputs.
        input_shape: ``(F, frames)`` the network is built for; other sizes are refused.
        dense: width of the hidden dense layer (1024 in the paper).
        dropout: dropout after the dense layer (0.4 in the paper).
    """

    min_side = 20

    def __init__(self, num_classes: int, input_shape: tuple[int, int], dense: int = 1024,
                 dropout: float = 0.4) -> None:
        super().__init__()
        self.input_shape = (int(input_shape[0]), int(input_shape[1]))
        fb, ft = (max(s, self.min_side) for s in self.input_shape)
        self.features = nn.Sequential(
            nn.Conv2d(1, 32, 3), nn.ReLU(), nn.BatchNorm2d(32),
            nn.Conv2d(32, 32, 3), nn.ReLU(), nn.BatchNorm2d(32), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3), nn.ReLU(), nn.BatchNorm2d(64),
            nn.Conv2d(64, 64, 3), nn.ReLU(), nn.BatchNorm2d(64), nn.MaxPool2d(4, 2),
        )
        flat = 64 * (((fb - 4) // 2 - 8) // 2 + 1) * (((ft - 4) // 2 - 8) // 2 + 1)
        self.classifier = nn.Sequential(nn.Flatten(), nn.Linear(flat, dense), nn.ReLU(), nn.Dropout(dropout),
                                        nn.Linear(dense, num_classes))

    def forward(self, x: Tensor) -> Tensor:
        check_representation(x)
        if tuple(x.shape[2:]) != self.input_shape:
            raise ValueError(f"koerich_cnn2d was built for inputs of {self.input_shape}, got {tuple(x.shape[2:])}")
        return self.classifier(self.features(upsample_to(x, (self.min_side, self.min_side))))


class AbdoliCNN1d(nn.Module):
    """Seed 003's 1D CNN (Table II) after Abdoli et al. 2019, on raw waveforms ``(B, 1, 1, T)``.

    Frozen gammatone conv (32 × 512) → AvgPool 8 → Conv 16 × 256/2 → AvgPool 8 → Conv 32 × 64/2 →
    Conv 64 × 32/2 → Conv 128 × 16/2 → MaxPool 2 → Dense 256 → Dropout 0.4 → output logits; every
    convolution is followed by LeakyReLU and batch normalisation. The gammatone weights are a
    parameter with ``requires_grad=False`` (re-enabling gradients for the whole model would unfreeze
    them). Waveforms shorter than :attr:`min_samples` (27,375, the smallest length every layer
    accepts) are zero-padded equally on both sides; resampling them would shift their pitch.

    Args:
        num_classes: outputs.
        input_shape: ``(1, T)`` the network is built for; other lengths are refused.
        sample_rate: waveform rate in Hz, for the gammatone centre frequencies (22,050 in seed 003).
        low_hz: lowest centre frequency.
        high_hz: highest centre frequency (below Nyquist).
        dropout: dropout after the dense layer.
    """

    min_samples = 27375

    def __init__(self, num_classes: int, input_shape: tuple[int, int], sample_rate: int = 22050,
                 low_hz: float = 100.0, high_hz: float = 8000.0, dropout: float = 0.4) -> None:
        super().__init__()
        if int(input_shape[0]) != 1:
            raise ValueError(f"abdoli_cnn1d takes the waveform front-end's (1, T) output, got {tuple(input_shape)}")
        self.num_samples = int(input_shape[1])
        self.gammatone = nn.Conv1d(1, 32, 512, bias=False)
        filters = gammatone_filters(sample_rate, 32, 512, low_hz, high_hz)
        self.gammatone.weight = nn.Parameter(filters.flip(-1).unsqueeze(1).float(), requires_grad=False)
        act = nn.LeakyReLU
        self.features = nn.Sequential(
            act(), nn.BatchNorm1d(32), nn.AvgPool1d(8),
            nn.Conv1d(32, 16, 256, 2), act(), nn.BatchNorm1d(16), nn.AvgPool1d(8),
            nn.Conv1d(16, 32, 64, 2), act(), nn.BatchNorm1d(32),
            nn.Conv1d(32, 64, 32, 2), act(), nn.BatchNorm1d(64),
            nn.Conv1d(64, 128, 16, 2), act(), nn.BatchNorm1d(128), nn.MaxPool1d(2),
        )
        n = max(self.num_samples, self.min_samples) - 511
        for kernel, stride in ((8, 8), (256, 2), (8, 8), (64, 2), (32, 2), (16, 2), (2, 2)):
            n = (n - kernel) // stride + 1
        self.classifier = nn.Sequential(nn.Flatten(), nn.Linear(128 * n, 256), act(), nn.Dropout(dropout),
                                        nn.Linear(256, num_classes))

    def forward(self, x: Tensor) -> Tensor:
        wave = waveform_input(x, self.num_samples, self.min_samples, "abdoli_cnn1d")
        return self.classifier(self.features(self.gammatone(wave)))


@BACKBONES.register("averagepool_cnn")
def averagepool_cnn(num_classes: int, input_shape: tuple[int, int], checkpoint: str | None = None) -> nn.Module:
    """Seed 000's AveragePoolCNN (see :class:`AveragePoolCNN`)."""
    return load_weights(AveragePoolCNN(num_classes), checkpoint, "averagepool_cnn")


@BACKBONES.register("koerich_cnn2d")
def koerich_cnn2d(num_classes: int, input_shape: tuple[int, int], dense: int = 1024, dropout: float = 0.4,
                  checkpoint: str | None = None) -> nn.Module:
    """Seed 003's 2D CNN (see :class:`KoerichCNN2d`)."""
    return load_weights(KoerichCNN2d(num_classes, input_shape, dense, dropout), checkpoint, "koerich_cnn2d")


@BACKBONES.register("abdoli_cnn1d")
def abdoli_cnn1d(num_classes: int, input_shape: tuple[int, int], sample_rate: int = 22050, low_hz: float = 100.0,
                 high_hz: float = 8000.0, dropout: float = 0.4, checkpoint: str | None = None) -> nn.Module:
    """Seed 003's gammatone 1D CNN (see :class:`AbdoliCNN1d`)."""
    net = AbdoliCNN1d(num_classes, input_shape, sample_rate, low_hz, high_hz, dropout)
    return load_weights(net, checkpoint, "abdoli_cnn1d")
