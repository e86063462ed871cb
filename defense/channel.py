"""Over the air: a clip played through a loudspeaker into a room and recorded by a microphone.

The channel of Qin, Carlini, Cottrell, Goodfellow & Raffel (2019), "Imperceptible, robust and targeted
adversarial examples for automatic speech recognition", Sec. 5: ``y = clip((h ∗ x) + n)``, with ``h`` a room
impulse response and ``n`` background noise; a fresh draw of ``h`` and ``n`` per clip and call, so an attacker can
optimise the expectation over draws (EoT, Athalye, Engstrom, Ilyas & Kwok 2018) and an evaluation can count the
draws a clip survives.

- Rooms: shoebox rooms simulated by ``pyroomacoustics``' image-source method (Allen & Berkley 1979): sizes,
  wall absorption and source/microphone positions drawn uniformly from the configured ranges by
  ``numpy.random.default_rng(seed)`` (:func:`draw_rooms`), simulated once per set of rooms and sample rate and
  kept in memory; or the recorded impulse responses (WAV files) of a folder.
- Playback band: the loudspeaker as a Butterworth band-pass (``scipy.signal.butter``, ``band_order`` per edge),
  folded into every impulse response once.
- Each response is normalised (unit energy by default) and the recording is aligned on its peak (the direct
  path): ``y[t] = (h ∗ x)[t + argmax|h|]`` for ``t < T``, so the clip keeps its length and start.
- Noise: white Gaussian noise scaled to exactly ``snr_db`` below the clip's recorded power (per clip; the scale is
  a constant for autograd: background noise does not follow the perturbation).

Convolution is one batched real FFT of length ≥ ``T + L`` (no wrap-around), linear in ``x`` and differentiable;
CPU and GPU. Waveforms are ``(B, 1, T)`` in ``[-1, 1]``; the output is clipped to that box, as a PCM recorder
stores it.
"""
from __future__ import annotations

import functools
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal, Mapping

import numpy as np
import torch
from scipy import signal
from torch import Tensor, nn

from victims.registry import ConfigError, to_dataclass
from victims.schema import above, at_least, between, check_domains

BAND_TAIL = 1e-10
"""A band filter's impulse response is kept until the energy left after it is below this share."""


@dataclass
class ChannelConfig:
    """A ``configs/channel/<option>.yaml`` file.

    Attributes:
        rooms: simulated rooms in the pool (ignored with ``folder``).
        seed: seed of the rooms' random sizes, absorption and positions.
        room_m: ``[[x_lo, x_hi], [y_lo, y_hi], [z_lo, z_hi]]`` room dimensions in metres.
        absorption: ``[lo, hi]`` energy absorption of the walls (one value per room, all walls).
        max_order: image-source reflection order.
        margin_m: least distance of source and microphone from every wall.
        min_distance_m: least source-microphone distance.
        max_seconds: impulse responses are cut after this long (``None``: kept whole).
        folder: recorded impulse responses (``*.wav``) used instead of simulated rooms.
        band_hz: ``[low cut, high cut]`` of the loudspeaker in Hz (``None``: full band).
        band_order: Butterworth order of each band edge.
        snr_db: background noise this many dB below the recorded clip (``None``: no noise).
        normalize: each response scaled to unit ``energy``, unit ``peak``, or left as it is (``none``).
    """

    rooms: int = field(default=32, metadata=at_least(1))
    seed: int = 0
    room_m: list[list[float]] = field(default_factory=lambda: [[3.0, 10.0], [3.0, 8.0], [2.5, 4.0]],
                                      metadata=above(0, each=True))
    absorption: list[float] = field(default_factory=lambda: [0.1, 0.6], metadata=between(0, 1, "(]", each=True))
    max_order: int = field(default=10, metadata=at_least(0))
    margin_m: float = field(default=0.5, metadata=at_least(0))
    min_distance_m: float = field(default=1.0, metadata=at_least(0))
    max_seconds: float | None = field(default=0.5, metadata=above(0))
    folder: str | None = None
    band_hz: list[float] | None = field(default=None, metadata=above(0, each=True))
    band_order: int = field(default=2, metadata=at_least(1))
    snr_db: float | None = None
    normalize: Literal["energy", "peak", "none"] = "energy"

    def __post_init__(self) -> None:
        check_domains(self, "channel")
        if len(self.room_m) != 3 or any(len(r) != 2 or r[0] > r[1] for r in self.room_m):
            raise ConfigError(f"channel.room_m must be three [low, high] ranges in metres, got {self.room_m}")
        if len(self.absorption) != 2 or self.absorption[0] > self.absorption[1]:
            raise ConfigError(f"channel.absorption must be [low, high], got {self.absorption}")
        if self.band_hz is not None and (len(self.band_hz) != 2 or self.band_hz[0] >= self.band_hz[1]):
            raise ConfigError(f"channel.band_hz must be [low cut, high cut] with low < high, got {self.band_hz}")
        if min(r[0] for r in self.room_m) <= 2 * self.margin_m:
            raise ConfigError(f"channel.margin_m {self.margin_m} leaves no room inside the smallest room "
                              f"{[r[0] for r in self.room_m]} m")


@dataclass(frozen=True)
class Room:
    """One simulated shoebox room: size and positions in metres, wall energy absorption."""

    size: tuple[float, float, float]
    absorption: float
    source: tuple[float, float, float]
    microphone: tuple[float, float, float]


@dataclass
class ChannelDraw:
    """One channel per clip: ``index`` ``(n,)`` into the pool of responses, ``noise`` ``(n, 1, T)`` standard
    normal (``None`` without noise)."""

    index: Tensor
    noise: Tensor | None


def channel_config(spec: str | Mapping[str, Any]) -> ChannelConfig:
    """The checked config of a channel option name (``configs/channel/<spec>.yaml``) or mapping.

    Raises:
        ConfigError: for an unknown option, key or value (one line).
    """
    if isinstance(spec, str):
        from defense.config import load_option

        spec = load_option("channel", spec)
    if not isinstance(spec, Mapping):
        raise ConfigError(f"a channel is an option name or a mapping, got {spec!r}")
    return to_dataclass(ChannelConfig, dict(spec), "channel")


def draw_rooms(cfg: ChannelConfig) -> tuple[Room, ...]:
    """``cfg.rooms`` rooms drawn by ``numpy.random.default_rng(cfg.seed)``: size and absorption uniform in their
    ranges, source and microphone uniform in the room shrunk by ``margin_m``, redrawn until ``min_distance_m``
    apart.

    Raises:
        ConfigError: when 1000 position draws in a room never reach ``min_distance_m``.
    """
    rng = np.random.default_rng(cfg.seed)
    rooms = []
    for _ in range(cfg.rooms):
        size = np.array([rng.uniform(lo, hi) for lo, hi in cfg.room_m])
        absorption = float(rng.uniform(*cfg.absorption))
        for _ in range(1000):
            src, mic = (rng.uniform(cfg.margin_m, size - cfg.margin_m) for _ in range(2))
            if np.linalg.norm(src - mic) >= cfg.min_distance_m:
                break
        else:
            raise ConfigError(f"channel.min_distance_m {cfg.min_distance_m} is out of reach in a "
                              f"{size.round(2).tolist()} m room with margin_m {cfg.margin_m}")
        rooms.append(Room(_triple(size), absorption, _triple(src), _triple(mic)))
    return tuple(rooms)


def _triple(v: np.ndarray) -> tuple[float, float, float]:
    return float(v[0]), float(v[1]), float(v[2])


def simulate(room: Room, sample_rate: int, max_order: int) -> np.ndarray:
    """The impulse response from ``room.source`` to ``room.microphone`` (``pyroomacoustics.ShoeBox``, image
    sources up to ``max_order``, no air absorption), float64."""
    import pyroomacoustics as pra

    shoebox = pra.ShoeBox(list(room.size), fs=sample_rate, materials=pra.Material(room.absorption),
                          max_order=max_order)
    shoebox.add_source(list(room.source))
    shoebox.add_microphone(list(room.microphone))
    shoebox.compute_rir()
    return np.asarray(shoebox.rir[0][0], dtype=np.float64)


@functools.lru_cache(maxsize=8)
def simulated_responses(rooms: tuple[Room, ...], sample_rate: int, max_order: int) -> tuple[np.ndarray, ...]:
    """:func:`simulate` for every room, computed once per (rooms, rate, order) in this process."""
    return tuple(simulate(room, sample_rate, max_order) for room in rooms)


def read_responses(folder: str | Path, sample_rate: int) -> list[np.ndarray]:
    """The ``*.wav`` impulse responses of ``folder`` in name order, mono at ``sample_rate``
    (:func:`training.data.audio.read_audio`: channels averaged, other rates resampled).

    Raises:
        ConfigError: naming a missing folder or one without WAV files.
    """
    from training.data.audio import read_audio

    path = Path(folder)
    if not path.is_dir():
        raise ConfigError(f"channel.folder {path}: no such folder of impulse responses")
    files = sorted(p for p in path.iterdir() if p.suffix.lower() == ".wav")
    if not files:
        raise ConfigError(f"channel.folder {path} holds no .wav impulse responses")
    return [read_audio(p, sample_rate).astype(np.float64) for p in files]


def band_filter(band_hz: list[float], order: int, sample_rate: int) -> np.ndarray:
    """Second-order sections of the loudspeaker's Butterworth band-pass.

    Raises:
        ConfigError: for a high cut at or above the Nyquist frequency.
    """
    if band_hz[1] >= sample_rate / 2:
        raise ConfigError(f"channel.band_hz high cut {band_hz[1]:g} Hz must lie below the Nyquist frequency "
                          f"{sample_rate / 2:g} Hz")
    return signal.butter(order, band_hz, btype="bandpass", fs=sample_rate, output="sos")


def _tail(sos: np.ndarray, sample_rate: int) -> int:
    """Samples after which the band filter's impulse response holds less than :data:`BAND_TAIL` of its energy."""
    impulse = np.zeros(sample_rate)
    impulse[0] = 1.0
    energy = signal.sosfilt(sos, impulse) ** 2
    left = energy[::-1].cumsum()[::-1] / energy.sum()
    return int(np.argmax(left < BAND_TAIL))


def prepare(responses: list[np.ndarray] | tuple[np.ndarray, ...], cfg: ChannelConfig, sample_rate: int) -> Tensor:
    """``(R, L)`` float32 responses of the channel: cut to ``max_seconds``, through the band filter (its tail
    appended), zero-padded to one length and normalised.

    Raises:
        ConfigError: for a response that is zero throughout.
    """
    keep = None if cfg.max_seconds is None else max(1, round(cfg.max_seconds * sample_rate))
    out = [np.asarray(h, dtype=np.float64)[:keep] for h in responses]
    if cfg.band_hz is not None:
        sos = band_filter(cfg.band_hz, cfg.band_order, sample_rate)
        tail = _tail(sos, sample_rate)
        out = [signal.sosfilt(sos, np.pad(h, (0, tail))) for h in out]
    length = max(len(h) for h in out)
    table = np.stack([np.pad(h, (0, length - len(h))) for h in out])
    scale = {"energy": np.sqrt((table ** 2).sum(axis=1)), "peak": np.abs(table).max(axis=1),
             "none": np.ones(len(table))}[cfg.normalize]
    if (np.abs(table).max(axis=1) == 0).any():
        raise ConfigError(f"channel impulse response {int(np.argmax(np.abs(table).max(axis=1) == 0))} is zero "
                          "throughout")
    return torch.from_numpy(table / scale[:, None]).float()


class RoomChannel(nn.Module):
    """``(B, 1, T) → (B, 1, T)``: each clip through one response of the pool, aligned on its peak, plus noise
    (see the module docstring). Differentiable in the input; the pool is a non-persistent buffer.

    Args:
        responses: ``(R, L)`` impulse responses (see :func:`prepare`).
        sample_rate: the waveform rate in Hz.
        snr_db: noise level below the recorded clip (``None``: no noise).
        rooms: the simulated rooms behind ``responses``, if simulated.
    """

    def __init__(self, responses: Tensor, sample_rate: int, snr_db: float | None = None,
                 rooms: tuple[Room, ...] = ()) -> None:
        super().__init__()
        if responses.dim() != 2 or responses.shape[0] == 0 or responses.shape[1] == 0:
            raise ValueError(f"responses must be (R, L) with R, L >= 1, got shape {tuple(responses.shape)}")
        self.register_buffer("responses", responses, persistent=False)
        self.sample_rate, self.snr_db, self.rooms = int(sample_rate), snr_db, rooms
        self._spectra: dict[tuple[int, str, torch.dtype], Tensor] = {}

    @property
    def offsets(self) -> Tensor:
        """``(R,)`` the peak (direct-path) sample of every response: the recording's alignment."""
        return self.responses.abs().argmax(dim=1)

    def draw(self, n: int, num_samples: int, generator: torch.Generator | None = None,
             device: torch.device | str | None = None) -> ChannelDraw:
        """``n`` channels: a response index uniform over the pool and (with noise) ``(n, 1, num_samples)``
        standard normal noise, from ``generator`` (torch's global RNG when ``None``) on ``device``."""
        dev = generator.device if generator is not None else torch.device(device or "cpu")
        index = torch.randint(len(self.responses), (n,), generator=generator, device=dev)
        noise = None
        if self.snr_db is not None:
            noise = torch.randn(n, 1, num_samples, generator=generator, device=dev)
        return ChannelDraw(index, noise)

    def forward(self, x: Tensor, draw: ChannelDraw | None = None) -> Tensor:
        """The recording of ``x`` through ``draw`` (a fresh draw from torch's global RNG when ``None``).

        Raises:
            ValueError: for a shape other than ``(B, 1, T)`` or a draw of another size.
        """
        if x.dim() != 3 or x.shape[1] != 1:
            raise ValueError(f"the room channel acts on waveforms (B, 1, T), got shape {tuple(x.shape)}")
        n, t = x.shape[0], x.shape[-1]
        draw = draw if draw is not None else self.draw(n, t, device=x.device)
        if draw.index.shape != (n,) or (draw.noise is not None and draw.noise.shape != (n, 1, t)):
            raise ValueError(f"a channel draw of {tuple(draw.index.shape)} clips does not fit {n} clips of {t} "
                             "samples")
        n_fft = 1 << math.ceil(math.log2(t + self.responses.shape[1]))
        spectra = self.spectra(n_fft, x.device, x.dtype)[draw.index.to(x.device)].unsqueeze(1)
        y = torch.fft.irfft(torch.fft.rfft(x, n=n_fft) * spectra, n=n_fft)[..., :t]
        if draw.noise is not None:
            y = y + noise_at_snr(y.detach(), draw.noise.to(device=x.device, dtype=x.dtype), float(self.snr_db))
        return y.clamp(-1.0, 1.0)

    def spectra(self, n_fft: int, device: torch.device, dtype: torch.dtype) -> Tensor:
        """``(R, n_fft/2 + 1)`` spectra of the responses rotated left by their peak (the samples before it wrap
        to the end), so the first ``T`` samples of the circular convolution are the aligned recording; cached
        per length, device and dtype."""
        key = (n_fft, str(device), dtype)
        if key not in self._spectra:
            h = self.responses.to(device=device, dtype=dtype)
            buf = torch.zeros(h.shape[0], n_fft, device=device, dtype=dtype)
            buf[:, :h.shape[1]] = h
            idx = (torch.arange(n_fft, device=device) + self.offsets.to(device)[:, None]) % n_fft
            self._spectra[key] = torch.fft.rfft(buf.gather(1, idx), dim=-1)
        return self._spectra[key]


def noise_at_snr(recorded: Tensor, noise: Tensor, snr_db: float) -> Tensor:
    """``noise`` scaled per clip so that ``10·log10(P_recorded / P_noise) = snr_db`` exactly (``P`` the mean
    square over the last axis; a silent clip gets none)."""
    power = recorded.pow(2).mean(dim=-1, keepdim=True)
    noise_power = noise.pow(2).mean(dim=-1, keepdim=True).clamp_min(torch.finfo(noise.dtype).tiny)
    return noise * (power / (noise_power * 10.0 ** (snr_db / 10))).sqrt()


def build_channel(cfg: ChannelConfig, sample_rate: int) -> RoomChannel:
    """The channel of ``cfg`` at ``sample_rate``: simulated rooms (cached) or the folder's responses.

    Raises:
        ConfigError: for a missing or empty folder, or a band above the Nyquist frequency.
    """
    if cfg.folder is not None:
        rooms: tuple[Room, ...] = ()
        raw: list[np.ndarray] | tuple[np.ndarray, ...] = read_responses(cfg.folder, sample_rate)
    else:
        rooms = draw_rooms(cfg)
        raw = simulated_responses(rooms, int(sample_rate), cfg.max_order)
    return RoomChannel(prepare(raw, cfg, sample_rate), sample_rate, cfg.snr_db, rooms)


CHANNEL_KEYS = ("channel", "over_the_air")
"""Config keys whose value names a ``configs/channel`` option (a room objective's or transform's ``channel``, the
evaluation's ``over_the_air``)."""


def channel_identity(value: Any) -> Any:
    """``value`` (a config or a list of them) with each channel option name under :data:`CHANNEL_KEYS` replaced by
    the option's resolved content, for run keys: a model trained or attacked through ``room`` is found again only
    while ``configs/channel/room.yaml`` says the same (its name alone would reuse runs made with other rooms)."""
    if isinstance(value, Mapping):
        return {k: {"option": v, **asdict(channel_config(v))} if k in CHANNEL_KEYS and isinstance(v, str)
                else channel_identity(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [channel_identity(v) for v in value]
    return value


def load_channel(spec: str | Mapping[str, Any], sample_rate: int) -> RoomChannel:
    """:func:`build_channel` of an option name or mapping (see :func:`channel_config`)."""
    return build_channel(channel_config(spec), sample_rate)
