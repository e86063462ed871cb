"""The bad-input corpus (issue 10): each case ends in a one-line error naming the file and the problem, or in
a documented, logged fix, and never leaves a partial file behind.

Write errors are real ones: ``RLIMIT_FSIZE`` makes the kernel fail every write past a size (``EFBIG``), as a
full disk fails them (``ENOSPC``), without a mount or a mocked function.
"""
from __future__ import annotations

import contextlib
import logging
import os
import resource
import signal
import struct
import threading
from collections import Counter
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import pytest
import soundfile as sf
import torch

from defense.cli import main
from tiny import CLASS_NAMES, NUM_SAMPLES, SAMPLE_RATE, TinyLogSpec, TinyNet, make_victim, noise, registry_victim, tones
from training.checkpoints import CheckpointError, load_checkpoint, load_victim, save_atomic, victim_state
from training.data import load_clips
from training.data.audio import read_audio
from training.data.base import ClipSet
from training.data.cache import cached
from training.data.errors import AudioError, DataError
from training.data.esc50 import esc50
from training.data.fsdkaggle2019 import fsdkaggle2019
from training.data.urbansound8k import urbansound8k
from training.files import OutputError
from training.trainer import TrainConfig, train
from user_errors import one_line
from evaluation.audio_out import write_wav
from victims.registry import ConfigError
from victims.victim import Victim

RATE = 8000


def leftovers(folder: Path) -> list[Path]:
    """Temporary files an interrupted write would leave."""
    return sorted(folder.rglob("*.tmp"))


def pcm16_header(frames: int, rate: int = RATE) -> bytes:
    """The 44-byte header of a mono 16-bit PCM WAV holding ``frames`` samples."""
    data = 2 * frames
    fmt = struct.pack("<IHHIIHH", 16, 1, 1, rate, 2 * rate, 2, 16)  # PCM, mono, 2 bytes a frame, 16 bits
    return b"RIFF" + struct.pack("<I", 36 + data) + b"WAVE" + b"fmt " + fmt + b"data" + struct.pack("<I", data)


def folder_set(tmp_path: Path, files: dict[str, np.ndarray | None]) -> dict[str, Any]:
    """A folder-per-class data set (``None`` = a file the test writes itself) and its config."""
    root = tmp_path / "data"
    for rel, wave in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        if wave is not None:
            sf.write(root / rel, wave, RATE, subtype="FLOAT")
    return {"name": "folder", "root": str(root), "sample_rate": RATE, "clip_seconds": 0.1,
            "cache_dir": str(tmp_path / "cache")}


@contextlib.contextmanager
def file_size_limit(nbytes: int) -> Iterator[None]:
    """Every write past ``nbytes`` of a file fails with ``EFBIG``, as writes to a full disk fail."""
    if threading.current_thread() is not threading.main_thread():
        pytest.skip("SIGXFSZ can only be ignored from the main thread")
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    previous = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # else the kernel kills the process
    resource.setrlimit(resource.RLIMIT_FSIZE, (nbytes, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, previous)


def clips(n_per_class: int, seed: int) -> ClipSet:
    waves, labels = tones(n_per_class, seed=seed)
    return ClipSet(waves, labels, torch.arange(len(labels)), torch.full((len(labels),), -1), CLASS_NAMES, SAMPLE_RATE)


def train_cfg(epochs: int = 2) -> TrainConfig:
    return TrainConfig(epochs=epochs, batch_size=16, lr=0.02, patience=None, device="cpu", seed=3, schedule="cosine")


# --- audio files -------------------------------------------------------------------------------------------


def test_flac_data_in_a_wav_file_is_decoded_and_logged(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    wave = noise(1, 0.1, RATE)
    cfg = folder_set(tmp_path, {"a/0.wav": wave, "b/0.wav": None})
    sf.write(Path(cfg["root"]) / "b" / "0.wav", wave, RATE, format="FLAC", subtype="PCM_16")
    with caplog.at_level(logging.DEBUG, logger="training.data"):
        data = load_clips(cfg)
    assert sf.info(Path(cfg["root"]) / "b" / "0.wav").format == "FLAC"
    np.testing.assert_allclose(data.waves[data.names.index("b/0.wav"), 0].numpy(), wave, atol=2 ** -15)
    assert "b/0.wav: FLAC data in a file named .wav; decoded as FLAC" in caplog.text
    assert "folder: decoded 1 files whose data is another format than their name says" in caplog.text


@pytest.mark.parametrize("case, fragment", [
    ("truncated", "truncated: its header declares 16000 bytes of audio, the file holds 8000 (50%)"),
    ("zero-length", "empty file (0 bytes)"),
    ("header-only, no frames", "empty audio file (0 samples)"),
    ("header-only, frames declared", "truncated: its header declares 16000 bytes of audio, the file holds 0 (0%)"),
])
def test_truncated_zero_length_and_header_only_wavs_are_one_line_errors(tmp_path: Path, case: str,
                                                                        fragment: str) -> None:
    path = tmp_path / "clip.wav"
    samples = (noise(2, 1.0, RATE) * 32767).astype("<i2").tobytes()
    content = {"truncated": pcm16_header(RATE) + samples[:8000], "zero-length": b"",
               "header-only, no frames": pcm16_header(0), "header-only, frames declared": pcm16_header(RATE)}[case]
    path.write_bytes(content)
    with pytest.raises(AudioError) as err:
        read_audio(path, RATE)
    assert one_line(err) == f"{path}: {fragment}"


@pytest.mark.parametrize("subtype, container, atol", [
    ("PCM_24", "WAV", 2 ** -23), ("PCM_24", "WAVEX", 2 ** -23), ("FLOAT", "WAV", 0.0), ("DOUBLE", "WAV", 1e-7)])
def test_24_bit_and_float_wavs_decode_to_their_samples(tmp_path: Path, subtype: str, container: str,
                                                       atol: float) -> None:
    wave = noise(3, 0.1, RATE)
    sf.write(tmp_path / "clip.wav", wave, RATE, subtype=subtype, format=container)
    assert (sf.info(tmp_path / "clip.wav").subtype, sf.info(tmp_path / "clip.wav").format) == (subtype, container)
    tally: Counter[str] = Counter()
    out = read_audio(tmp_path / "clip.wav", RATE, tally=tally)
    assert out.dtype == np.float32 and out.shape == wave.shape and not tally
    np.testing.assert_allclose(out, wave, rtol=0, atol=atol)


def pcm16_wav(path: Path, head: np.ndarray, frames: int | None = None) -> Path:
    """A valid 16-bit WAV of ``frames`` samples (default: ``len(head)``) starting with ``head``, then silence.
    The silence is a hole in a sparse file, so a one-hour file costs no disk."""
    frames = len(head) if frames is None else frames
    with open(path, "wb") as handle:
        handle.write(pcm16_header(frames) + np.round(head * 32767).astype("<i2").tobytes())
    os.truncate(path, 44 + 2 * frames)
    return path


def test_a_one_hour_file_is_refused_by_a_data_set_and_read_bounded_by_attack(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A data set refuses it before decoding (``max_seconds``, 600 s by default); ``advaudio attack`` takes
    the first clip length only, exactly as a whole-file decode starts."""
    cfg = folder_set(tmp_path, {"a/0.wav": noise(4, 0.1, RATE), "b/hour.wav": None})
    head = noise(5, 2.0, RATE)
    hour = pcm16_wav(Path(cfg["root"]) / "b" / "hour.wav", head, 3600 * RATE)
    with pytest.raises(AudioError) as err:
        load_clips(cfg)
    assert one_line(err) == f"{hour}: 3600.0 s long, more than max_seconds=600"
    pcm16_wav(tmp_path / "head.wav", head)
    with caplog.at_level(logging.INFO, logger="training.data.audio"):
        bounded = read_audio(hour, 3000, first_seconds=0.25)
    assert f"{hour}: 3600.0 s long; decoding its first 0.25 s" in caplog.text
    np.testing.assert_allclose(bounded, read_audio(tmp_path / "head.wav", 3000)[:750], atol=1e-6)


@pytest.mark.parametrize("case, fragment", [
    ("text", "cannot read audio file {path}: Format not recognised."),
    ("folder", "{path}: not a regular file"),
    ("fifo", "{path}: not a regular file"),  # reading it would block forever
    ("missing", "audio file not found: {path}"),
])
def test_a_non_audio_file_is_a_one_line_error(tmp_path: Path, case: str, fragment: str) -> None:
    path = tmp_path / "clip.wav"
    if case == "text":
        path.write_text("filename,label\nclip.wav,dog\n")
    elif case == "folder":
        path.mkdir()
    elif case == "fifo":
        os.mkfifo(path)
    with pytest.raises(AudioError) as err:
        read_audio(path, RATE)
    assert one_line(err) == fragment.format(path=path)


def test_a_symlink_escaping_the_data_root_is_followed_and_logged(tmp_path: Path,
                                                                caplog: pytest.LogCaptureFixture) -> None:
    """Data sets are often assembled from links to another disk, so links are followed wherever they lead;
    those leading outside the root are counted in the log. A dangling link is a missing file."""
    outside = noise(6, 0.1, RATE)
    sf.write(tmp_path / "elsewhere.wav", outside, RATE, subtype="FLOAT")
    cfg = folder_set(tmp_path, {"a/0.wav": noise(7, 0.1, RATE), "b/.keep": None})
    (Path(cfg["root"]) / "b" / "link.wav").symlink_to(tmp_path / "elsewhere.wav")
    with caplog.at_level(logging.INFO, logger="training.data.source"):
        data = load_clips(cfg)
    np.testing.assert_array_equal(data.waves[data.names.index("b/link.wav"), 0].numpy(), outside[:800])
    assert (f"folder: 1 files are symbolic links leading outside the data root {cfg['root']} (followed): "
            "b/link.wav") in caplog.text
    (tmp_path / "elsewhere.wav").unlink()
    with pytest.raises(AudioError) as err:
        load_clips(cfg)
    assert one_line(err) == f"audio file listed for folder not found: {Path(cfg['root']) / 'b' / 'link.wav'}"


# --- metadata CSVs -----------------------------------------------------------------------------------------


def write_esc50_with_bom(root: Path) -> Callable[[], Any]:
    (root / "meta").mkdir(parents=True)
    rows = ["filename,fold,target,category,esc10,src_file,take", "1-100-A-0.wav,1,0,dog,True,100,A",
            "2-200-A-1.wav,2,1,rooster,False,200,A"]
    (root / "meta" / "esc50.csv").write_bytes(b"\xef\xbb\xbf" + "\n".join(rows).encode())
    return lambda: esc50(str(root))


def write_urbansound8k_with_crlf(root: Path) -> Callable[[], Any]:
    (root / "metadata").mkdir(parents=True)
    rows = ["slice_file_name,fsID,start,end,salience,fold,classID,class", "100-0-0-0.wav,100,0,1,1,1,3,dog_bark",
            "200-8-0-0.wav,200,0,1,1,2,8,siren"]
    (root / "metadata" / "UrbanSound8K.csv").write_bytes("\r\n".join(rows).encode() + b"\r\n")
    return lambda: urbansound8k(str(root))


def write_fsdkaggle_with_quoted_commas(root: Path) -> Callable[[], Any]:
    root.mkdir(parents=True)
    rows = ["fname,labels", '"a,1.wav",Gong', 'b.wav,"Gong,Marimba_and_xylophone"', "c.wav,Marimba_and_xylophone"]
    (root / "train_curated.csv").write_text("\n".join(rows) + "\n")
    return lambda: fsdkaggle2019(str(root), labels=["Gong", "Marimba_and_xylophone"])


@pytest.mark.parametrize("write, files, labels", [
    (write_esc50_with_bom, ["audio/1-100-A-0.wav", "audio/2-200-A-1.wav"], [0, 1]),
    (write_urbansound8k_with_crlf, ["audio/fold1/100-0-0-0.wav", "audio/fold2/200-8-0-0.wav"], [3, 8]),
    (write_fsdkaggle_with_quoted_commas, ["FSDKaggle2019.audio_train_curated/a,1.wav",
                                          "FSDKaggle2019.audio_train_curated/c.wav"], [0, 1]),
], ids=["bom", "crlf", "quoted-commas"])
def test_csvs_with_bom_crlf_and_quoted_commas_are_read_as_written(
        tmp_path: Path, caplog: pytest.LogCaptureFixture, write: Callable[[Path], Callable[[], Any]],
        files: list[str], labels: list[int]) -> None:
    load = write(tmp_path / "data")
    with caplog.at_level(logging.INFO, logger="training.data.source"):
        table = load()
    assert (table.files, table.labels) == (files, labels)
    assert ("starts with a byte-order mark; ignored" in caplog.text) == (write is write_esc50_with_bom)


def test_a_csv_that_is_not_utf8_is_a_one_line_error(tmp_path: Path) -> None:
    write_esc50_with_bom(tmp_path)
    path = tmp_path / "meta" / "esc50.csv"
    path.write_bytes(path.read_bytes()[3:].replace(b"rooster", "caf\u00e9".encode("latin-1")))
    with pytest.raises(DataError) as err:
        esc50(str(tmp_path))
    assert one_line(err) == f"{path}:3: not UTF-8 text (byte 0xe9); save it as UTF-8"


# --- checkpoints -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("other, fragment", [
    ({"width": 16}, "is from another architecture: 0 missing, 0 unexpected, 3 mis-shaped keys (first: "
                    "'backbone.conv.weight')"),
    ({"num_classes": 4}, "was trained for 4 classes, this model has 3 (0 missing, 0 unexpected, 2 mis-shaped keys)"),
], ids=["architecture", "class-count"])
def test_a_checkpoint_of_another_architecture_or_class_count_is_a_one_line_error(
        tmp_path: Path, other: dict[str, int], fragment: str) -> None:
    """Resuming from it (the trainer) or starting from it (a backbone's ``checkpoint`` key) names the mismatch."""
    foreign = Victim(TinyLogSpec(), TinyNet(**other), [f"c{i}" for i in range(other.get("num_classes", 3))],
                     NUM_SAMPLES)
    path = save_atomic(victim_state(foreign), tmp_path / "foreign.pt")
    with pytest.raises(CheckpointError) as err:
        train(make_victim(), clips(4, 1), clips(2, 2), clips(2, 3), train_cfg(), checkpoint_path=path)
    assert one_line(err) == f"checkpoint {path} {fragment}"
    from victims.backbones import load_weights

    with pytest.raises(ConfigError) as err:
        load_weights(TinyNet(), path, "tiny")
    assert one_line(err) == f"backbone 'tiny': checkpoint {path} {fragment.replace('backbone.', '')}"


def test_a_training_checkpoint_where_a_victim_is_expected(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                          caplog: pytest.LogCaptureFixture) -> None:
    """An unfinished run's training checkpoint holds the last epoch's weights, not the selected ones: refused.
    A finished run's holds the selected weights: used, and logged."""
    ckpt = tmp_path / "abc.train.pt"
    data = clips(6, 1), clips(3, 2), clips(3, 3)
    train(registry_victim(), *data, train_cfg(), checkpoint_path=ckpt, stop_after=1)
    with pytest.raises(CheckpointError) as err:
        load_victim(ckpt)
    assert one_line(err) == (f"{ckpt} is the training checkpoint of an unfinished run (epoch 1), not a trained "
                             "victim: rerun the training command to finish it, then pass abc.victim.pt")
    sf.write(tmp_path / "clip.wav", noise(8, 0.2, SAMPLE_RATE), SAMPLE_RATE)
    assert main(["attack", "--checkpoint", str(ckpt), "--input", str(tmp_path / "clip.wav"),
                 "--output", str(tmp_path / "adv.wav"), "--attack", "fgsm"]) == 2
    assert capsys.readouterr().err == f"advaudio attack: error: {err.value}\n"
    done = train(registry_victim(), *data, train_cfg(), checkpoint_path=ckpt)
    with caplog.at_level(logging.INFO, logger="training.checkpoints"):
        victim = load_victim(ckpt)
    assert f"{ckpt}: the selected weights of a finished training (epoch {done.best_epoch} of " in caplog.text
    for (name, want), got in zip(done.victim.state_dict().items(), victim.state_dict().values()):
        assert torch.equal(want, got), name


# --- outputs -----------------------------------------------------------------------------------------------


@pytest.fixture
def victim_checkpoint(tmp_path: Path) -> Path:
    return save_atomic(victim_state(registry_victim()), tmp_path / "v.victim.pt")


def attack(checkpoint: Path, source: Path, output: Path) -> int:
    return main(["attack", "--checkpoint", str(checkpoint), "--input", str(source), "--output", str(output),
                 "--attack", "pgdn", "eps=0.9", "lr=0.2", "steps=50"])  # a budget that fools the untrained victim


def test_attack_on_a_one_hour_file_into_a_missing_folder(tmp_path: Path, victim_checkpoint: Path,
                                                         caplog: pytest.LogCaptureFixture) -> None:
    """The missing folders are created (logged); the input's first clip length is attacked (a warning)."""
    source = pcm16_wav(tmp_path / "hour.wav", noise(9, 1.0, RATE), 3600 * RATE)
    output = tmp_path / "new" / "deeper" / "adv.wav"
    with caplog.at_level(logging.INFO):
        assert attack(victim_checkpoint, source, output) == 0  # fooled: written (a failed attack writes nothing)
    assert f"created output folder {output.parent}" in caplog.text
    assert f"{source} is 3600.00 s long; the victim takes 0.20 s: its first part is attacked" in caplog.text
    assert sf.info(output).frames == NUM_SAMPLES and sf.info(output).subtype == "FLOAT"
    assert not leftovers(tmp_path)


def test_an_output_that_cannot_be_written_is_a_one_line_error_before_the_attack(
        tmp_path: Path, victim_checkpoint: Path, capsys: pytest.CaptureFixture[str]) -> None:
    source = tmp_path / "clip.wav"
    sf.write(source, noise(10, 0.2, SAMPLE_RATE), SAMPLE_RATE)
    (tmp_path / "taken").write_text("a file where a folder is asked for")
    for output, message in [
        (tmp_path / "taken" / "adv.wav", f"cannot create output folder {tmp_path / 'taken'}: File exists"),
        (tmp_path / "adv.flac", f"--output {tmp_path / 'adv.flac'}: the adversarial file is WAV data; give it a "
                                ".wav name")]:
        assert attack(victim_checkpoint, source, output) == 2
        assert capsys.readouterr().err == f"advaudio attack: error: {message}\n"
        assert not output.exists()


@pytest.mark.parametrize("command", ["train", "report"])
@pytest.mark.parametrize("case", ["read-only", "under a file"])
def test_an_outputs_folder_that_cannot_be_written_is_a_one_line_error(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, case: str,
        command: str) -> None:
    monkeypatch.setenv("ADVAUDIO_CACHE", str(tmp_path / "cache"))
    if case == "read-only":
        if os.geteuid() == 0:
            pytest.skip("root ignores file permissions")
        outputs = tmp_path / "outputs"
        outputs.mkdir()
        outputs.chmod(0o555)
        message = f"outputs folder (--outputs or ADVAUDIO_OUTPUTS) {outputs} is not writable"
    else:
        (tmp_path / "file").write_text("")
        outputs = tmp_path / "file" / "outputs"
        message = f"cannot create outputs folder (--outputs or ADVAUDIO_OUTPUTS) {outputs}: Not a directory"
        if command == "report":  # it reads before it writes, and never creates the folder of a missing store
            message = f"no MLflow store at {outputs / 'mlflow.db'}: nothing to report for 'demo'"
    args = ["train", "--outputs", str(outputs), "train.epochs=1"] if command == "train" else \
        ["report", "demo", "--outputs", str(outputs)]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"advaudio {command}: error: {message}") and err.count("\n") == 1, err
    assert not (tmp_path / "cache").exists()  # refused before any data was read


def test_a_write_error_during_checkpointing_keeps_the_last_checkpoint(tmp_path: Path) -> None:
    """A disk that fills up at epoch 2: one-line error naming the file; epoch 1's checkpoint intact, no temporary
    file; the rerun resumes from epoch 1."""
    ckpt = tmp_path / "run.train.pt"
    data = clips(6, 1), clips(3, 2), clips(3, 3)
    train(make_victim(), *data, train_cfg(3), checkpoint_path=ckpt, stop_after=1)
    before = ckpt.read_bytes()
    with file_size_limit(len(before) // 2), pytest.raises(OutputError) as err:
        train(make_victim(), *data, train_cfg(3), checkpoint_path=ckpt)
    assert one_line(err) == f"cannot write checkpoint {ckpt}: File too large"
    assert ckpt.read_bytes() == before and not leftovers(tmp_path)
    epochs: list[int] = []
    train(make_victim(), *data, train_cfg(3), checkpoint_path=ckpt, on_epoch=lambda _m, e: epochs.append(e))
    assert epochs == [2, 3] and load_checkpoint(ckpt)["finished"]


def test_a_write_error_writing_a_wav_keeps_the_old_file(tmp_path: Path) -> None:
    path = write_wav(tmp_path / "adv.wav", noise(11, 0.01, RATE), RATE)
    before = path.read_bytes()
    with file_size_limit(4096), pytest.raises(OutputError) as err:
        write_wav(path, noise(12, 1.0, RATE), RATE)
    assert one_line(err) == f"cannot write WAV file {path}: File too large"
    assert path.read_bytes() == before and not leftovers(tmp_path)


def test_a_write_error_writing_the_cache_is_a_warning_and_leaves_no_file(tmp_path: Path,
                                                                         caplog: pytest.LogCaptureFixture) -> None:
    wave = noise(13, 1.0, RATE)
    with file_size_limit(4096), caplog.at_level(logging.WARNING, logger="training.data.cache"):
        arrays = cached(tmp_path / "cache", "set", {"k": 1}, lambda: {"samples": wave})
    assert arrays["samples"] is wave
    assert "could not write cache" in caplog.text and "File too large" in caplog.text
    assert not list((tmp_path / "cache").iterdir())
