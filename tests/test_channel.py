"""The over-the-air channel (defense/channel.py) against oracles: pyroomacoustics' own impulse responses (energy and
direct-path delay), numpy/scipy convolution and band filtering, the exact SNR of its noise, an identity channel that
returns its input, seeded draws, and one-line errors on bad input."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pyroomacoustics as pra
import pytest
import soundfile as sf
import torch
from scipy import signal

from defense.channel import (ChannelDraw, RoomChannel, build_channel, channel_config, draw_rooms, load_channel,
                             noise_at_snr, simulated_responses)
from defense.config import CONFIG_ROOT, options
from defense.transforms import TRANSFORMS
from victims.registry import ConfigError

RATE = 8000
RAW = {"rooms": 3, "seed": 1, "max_order": 6, "max_seconds": None, "normalize": "none"}
"""Pyroomacoustics' responses as they come: no cut, no band, no scaling, no noise."""


def identity_folder(tmp_path: Path, rate: int = RATE) -> Path:
    """A folder holding one recorded impulse response: a unit impulse (the identity channel)."""
    folder = tmp_path / "rirs"
    folder.mkdir()
    sf.write(folder / "delta.wav", np.array([1.0, 0.0, 0.0, 0.0], dtype=np.float32), rate, subtype="FLOAT")
    return folder


def speech_like(n: int, t: int, seed: int = 0, amplitude: float = 0.1) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return amplitude * torch.randn(n, 1, t, generator=gen)


@pytest.mark.timeout(60)
def test_impulse_responses_match_pyroomacoustics_energy_and_delay() -> None:
    """Each room rebuilt here from its recorded size, absorption and positions gives pyroomacoustics' response with
    the channel's energy and peak; the peak is the direct path, d/c·fs plus the fractional-delay filter's half
    length (pyroomacoustics' frac_delay_length // 2), within one sample."""
    channel = load_channel(RAW, RATE)
    assert len(channel.rooms) == 3 and channel.responses.shape[0] == 3
    c, half = pra.constants.get("c"), pra.constants.get("frac_delay_length") // 2
    for i, room in enumerate(channel.rooms):
        shoebox = pra.ShoeBox(list(room.size), fs=RATE, materials=pra.Material(room.absorption), max_order=6)
        shoebox.add_source(list(room.source))
        shoebox.add_microphone(list(room.microphone))
        shoebox.compute_rir()
        ours = channel.responses[i].double().numpy()
        theirs = np.asarray(shoebox.rir[0][0])
        assert np.sum(ours ** 2) == pytest.approx(np.sum(theirs ** 2), rel=1e-5)
        assert int(channel.offsets[i]) == int(np.argmax(np.abs(theirs)))
        distance = math.dist(room.source, room.microphone)
        assert abs(int(channel.offsets[i]) - (distance / c * RATE + half)) <= 1.0
        np.testing.assert_allclose(ours[:len(theirs)], theirs, atol=1e-6)
        assert not ours[len(theirs):].any()


@pytest.mark.timeout(30)
def test_rooms_follow_their_ranges_and_seed() -> None:
    cfg = channel_config({"rooms": 20, "seed": 3, "margin_m": 0.4, "min_distance_m": 1.5})
    rooms = draw_rooms(cfg)
    for room in rooms:
        for (lo, hi), size, src, mic in zip(cfg.room_m, room.size, room.source, room.microphone):
            assert lo <= size <= hi and 0.4 <= src <= size - 0.4 and 0.4 <= mic <= size - 0.4
        assert 0.1 <= room.absorption <= 0.6 and math.dist(room.source, room.microphone) >= 1.5
    assert draw_rooms(cfg) == rooms
    assert draw_rooms(channel_config({"rooms": 20, "seed": 4, "margin_m": 0.4, "min_distance_m": 1.5})) != rooms


@pytest.mark.timeout(60)
def test_recording_equals_numpy_convolution_band_and_alignment() -> None:
    """Oracle of the whole chain without noise: scipy's Butterworth band-pass on the pyroomacoustics response,
    scaled to unit energy, ``numpy.convolve`` with the clip, read from the response's peak on."""
    cfg = {"rooms": 2, "seed": 2, "max_order": 4, "max_seconds": 0.05, "band_hz": [150.0, 3600.0], "band_order": 2}
    channel = load_channel(cfg, RATE)
    checked = channel_config(cfg)
    sos = signal.butter(2, [150.0, 3600.0], btype="bandpass", fs=RATE, output="sos")
    x = speech_like(2, 600, seed=1)
    y = channel(x, ChannelDraw(torch.tensor([0, 1]), None))
    for i, raw in enumerate(simulated_responses(draw_rooms(checked), RATE, 4)):
        h = signal.sosfilt(sos, np.pad(raw[:400], (0, RATE)))
        h /= np.sqrt(np.sum(h ** 2))
        peak = int(np.argmax(np.abs(h)))
        want = np.convolve(x[i, 0].double().numpy(), h)[peak:peak + 600]
        np.testing.assert_allclose(y[i, 0].double().numpy(), want, atol=2e-5)


@pytest.mark.timeout(30)
def test_identity_channel_returns_its_input(tmp_path: Path) -> None:
    channel = load_channel({"folder": str(identity_folder(tmp_path))}, RATE)
    x = speech_like(3, 500)
    torch.testing.assert_close(channel(x), x, rtol=0, atol=1e-6)
    assert channel.rooms == () and channel.responses.shape == (1, 4)


@pytest.mark.timeout(30)
@pytest.mark.parametrize("snr_db", [0.0, 10.0, 30.0])
def test_noise_sits_at_the_stated_snr(snr_db: float) -> None:
    """The noise added to a drawn recording is exactly ``snr_db`` below that recording's power, per clip."""
    channel = load_channel({**RAW, "normalize": "energy", "snr_db": snr_db, "max_seconds": 0.1}, RATE)
    x = speech_like(4, 800, amplitude=0.01)
    draw = channel.draw(4, 800, generator=torch.Generator().manual_seed(0))
    noisy = channel(x, draw)
    clean = channel(x, ChannelDraw(draw.index, None))
    measured = 10 * torch.log10(clean.pow(2).mean(-1) / (noisy - clean).pow(2).mean(-1))
    torch.testing.assert_close(measured, torch.full_like(measured, snr_db), rtol=0, atol=1e-3)
    assert torch.equal(noise_at_snr(torch.zeros(1, 1, 8), torch.ones(1, 1, 8), 10.0), torch.zeros(1, 1, 8))


@pytest.mark.timeout(30)
def test_seeded_draws_reproduce_and_rooms_are_simulated_once() -> None:
    cfg = {**RAW, "rooms": 4, "snr_db": 20.0, "seed": 5}
    before = simulated_responses.cache_info().hits
    channel, again = load_channel(cfg, RATE), load_channel(cfg, RATE)
    assert simulated_responses.cache_info().hits == before + 1
    torch.testing.assert_close(channel.responses, again.responses, rtol=0, atol=0)
    x = speech_like(6, 400)
    first = channel(x, channel.draw(6, 400, generator=torch.Generator().manual_seed(7)))
    second = again(x, again.draw(6, 400, generator=torch.Generator().manual_seed(7)))
    other = channel(x, channel.draw(6, 400, generator=torch.Generator().manual_seed(8)))
    assert torch.equal(first, second) and not torch.equal(first, other)
    torch.manual_seed(11)
    global_first = channel(x)
    torch.manual_seed(11)
    assert torch.equal(channel(x), global_first)


@pytest.mark.timeout(60)
def test_gradient_is_that_of_the_linear_channel() -> None:
    """float64 gradcheck without noise; with noise the gradient is unchanged (the noise level is a constant)."""
    channel = load_channel({**RAW, "rooms": 2, "max_order": 2, "max_seconds": 0.004, "normalize": "peak"}, RATE)
    x = speech_like(2, 24, amplitude=0.05).double().requires_grad_()
    draw = ChannelDraw(torch.tensor([1, 0]), None)
    assert torch.autograd.gradcheck(lambda w: channel(w, draw), (x,))
    noisy = RoomChannel(channel.responses, RATE, snr_db=5.0)
    noise = ChannelDraw(draw.index, torch.randn(2, 1, 24, dtype=torch.float64))
    weights = torch.randn(2, 1, 24, dtype=torch.float64)
    (g_clean,) = torch.autograd.grad((channel(x, draw) * weights).sum(), x)
    (g_noisy,) = torch.autograd.grad((noisy(x, noise) * weights).sum(), x)
    torch.testing.assert_close(g_noisy, g_clean)


@pytest.mark.timeout(60)
def test_room_transform_and_every_channel_option_build() -> None:
    """``transform: room`` is a random input transform over the named channel; every configs/channel option
    validates and builds at FSDD's 8 kHz."""
    room = TRANSFORMS.create("room", sample_rate=RATE, channel="room")
    assert type(room).random and room.domain == "waveform"
    assert room.channel.responses.shape[0] == channel_config("room").rooms
    assert options("channel") and all(build_channel(channel_config(o), RATE) for o in options("channel"))
    assert (CONFIG_ROOT / "channel" / "room.yaml").is_file()


@pytest.mark.timeout(30)
def test_bad_input_gives_one_line_errors(tmp_path: Path) -> None:
    cases = [
        ({"folder": str(tmp_path / "nowhere")}, "channel.folder .*nowhere: no such folder"),
        ({"folder": str(tmp_path)}, f"channel.folder {tmp_path} holds no .wav impulse responses"),
        ({"band_hz": [100.0, 4000.0], "rooms": 1}, "high cut 4000 Hz must lie below the Nyquist frequency 4000 Hz"),
        ({"band_hz": [300.0, 200.0]}, "band_hz must be \\[low cut, high cut\\]"),
        ({"room_m": [[3, 4], [3, 4]]}, "room_m must be three"),
        ({"margin_m": 2.0}, "margin_m 2.0 leaves no room"),
        ({"rooms": 1, "room_m": [[1.2, 1.2], [1.2, 1.2], [1.2, 1.2]], "margin_m": 0.5, "min_distance_m": 1.0},
         "min_distance_m 1.0 is out of reach"),
        ({"absorption": [0.0, 0.5]}, "channel.absorption"),
        ({"room": 3}, "unknown key 'channel.room'"),
        ("no_such_room", "unknown channel option 'no_such_room'"),
    ]
    for spec, message in cases:
        with pytest.raises(ConfigError, match=message) as err:
            load_channel(spec, RATE)
        assert "\n" not in str(err.value)
    channel = load_channel({"folder": str(identity_folder(tmp_path))}, RATE)
    with pytest.raises(ValueError, match=r"acts on waveforms \(B, 1, T\), got shape \(2, 100\)"):
        channel(torch.zeros(2, 100))
    with pytest.raises(ValueError, match="a channel draw of \\(3,\\) clips does not fit 2 clips"):
        channel(torch.zeros(2, 1, 100), ChannelDraw(torch.zeros(3, dtype=torch.long), None))


@pytest.mark.gpu
@pytest.mark.timeout(60)
def test_gpu_recording_equals_cpu() -> None:
    channel = load_channel({**RAW, "snr_db": 15.0, "band_hz": [150.0, 3600.0]}, RATE)
    x = speech_like(5, 4000)
    draw = channel.draw(5, 4000, generator=torch.Generator().manual_seed(0))
    on_cpu = channel(x, draw)
    xg = x.cuda().requires_grad_()
    on_gpu = channel.cuda()(xg, draw)
    on_gpu.sum().backward()
    torch.testing.assert_close(on_gpu.cpu(), on_cpu, rtol=0, atol=1e-5)
    assert xg.grad is not None and xg.grad.device.type == "cuda"


@pytest.mark.timeout(60)
def test_fsdd_speech_through_the_room_option(fsdd_root: Path) -> None:
    """configs/channel/room.yaml on four FSDD recordings (8 kHz speech): each recording equals scipy's
    ``fftconvolve`` of the clip with the drawn response, read from its peak on, plus noise at exactly 20 dB."""
    clips = []
    for path in sorted((fsdd_root / "recordings").glob("*.wav"))[:4]:
        wave, rate = sf.read(path, dtype="float32")
        assert rate == RATE
        clips.append(np.pad(wave[:4000], (0, max(0, 4000 - len(wave)))))
    x = torch.from_numpy(np.stack(clips)).unsqueeze(1)
    channel = load_channel("room", RATE)
    draw = channel.draw(4, 4000, generator=torch.Generator().manual_seed(2))
    clean = channel(x, ChannelDraw(draw.index, None))
    for i, r in enumerate(draw.index.tolist()):
        h = channel.responses[r].double().numpy()
        peak = int(np.argmax(np.abs(h)))
        want = np.clip(signal.fftconvolve(x[i, 0].double().numpy(), h)[peak:peak + 4000], -1, 1)
        np.testing.assert_allclose(clean[i, 0].double().numpy(), want, atol=1e-5)
    noisy = channel(x, draw)
    snr = 10 * torch.log10(clean.pow(2).mean(-1) / (noisy - clean).pow(2).mean(-1))
    torch.testing.assert_close(snr, torch.full_like(snr, 20.0), rtol=0, atol=0.05)
