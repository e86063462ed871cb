"""Dai et al.'s M5 raw-waveform CNN (victims/wave_models.py)."""
from __future__ import annotations

import pytest
import torch

from victims.backbones import BACKBONES
from victims.wave_models import M5


def test_m5_layers_follow_dai_2017_table_1() -> None:
    net = M5(num_classes=10, input_shape=(1, 32000))
    convs = [m for m in net.features if isinstance(m, torch.nn.Conv1d)]
    assert [(c.in_channels, c.out_channels, c.kernel_size[0], c.stride[0]) for c in convs] == [
        (1, 128, 80, 4), (128, 128, 3, 1), (128, 256, 3, 1), (256, 512, 3, 1)]
    assert net.classifier.in_features == 512
    # 32000 samples (4 s at 8 kHz, the paper's input): 7981 after the first conv, then four poolings by 4
    lengths = []
    x = torch.zeros(1, 1, 32000)
    for module in net.features:
        x = module(x)
        if isinstance(module, torch.nn.MaxPool1d):
            lengths.append(x.shape[-1])
    assert lengths == [1995, 498, 124, 31]


def test_m5_pads_short_waveforms_to_its_minimum_length() -> None:
    assert M5.min_samples == 1100  # conv output 256 -> 64 -> 16 -> 4 -> 1 after the poolings
    net = BACKBONES.create("m5", num_classes=3, input_shape=(1, 400), width=4).eval()
    wave = torch.randn(2, 1, 1, 400)
    padded = torch.nn.functional.pad(wave[:, :, 0], (350, 350)).unsqueeze(2)
    wide = BACKBONES.create("m5", num_classes=3, input_shape=(1, 1100), width=4).eval()
    wide.load_state_dict(net.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(net(wave), wide(padded))
    with pytest.raises(ValueError, match=r"built for inputs of \(1, 400\)"):
        net(torch.randn(1, 1, 1, 500))
    with pytest.raises(ValueError, match=r"\(1, T\)"):
        M5(num_classes=3, input_shape=(20, 9))
