"""``advaudio attack`` on one file (issue 17, items 1 and 6): it never destroys a file it reads, checks every output
path before any work, exits 3 and writes nothing when the attack does not fool the victim, shows its progress
(model calls, best SNR so far) and honours the attack's own steps and ``--max-seconds``."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import soundfile as sf
import torch

import defense.craft as craft
from attacks.base import Attack, ModelFn, RunOutput
from defense.cli import main
from defense.craft import Progress, craft_file
from evaluation.metrics import snr_db
from tiny import NUM_SAMPLES, SAMPLE_RATE, noise, registry_victim
from training.checkpoints import save_atomic, victim_state
from victims.bounds import Bounds

UNFOOLABLE = ["--attack", "pgdn", "eps=0", "steps=6"]  # a zero budget: every step evaluates the clean clip
FOOLING = ["--attack", "pgdn", "eps=0.9", "lr=0.2", "steps=50"]


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    checkpoint = save_atomic(victim_state(registry_victim()), tmp_path / "v.victim.pt")
    source = tmp_path / "clip.wav"
    sf.write(source, noise(10, NUM_SAMPLES / SAMPLE_RATE, SAMPLE_RATE), SAMPLE_RATE, subtype="FLOAT")
    return {"checkpoint": checkpoint, "input": source}


def attack(files: dict[str, Path], output: Path, *extra: str) -> int:
    return main(["attack", "--checkpoint", str(files["checkpoint"]), "--input", str(files["input"]),
                 "--output", str(output), "--no-progress", *(extra or FOOLING)])


@pytest.fixture
def never_attacks(monkeypatch: pytest.MonkeyPatch) -> None:
    def never(*_args: object, **_kwargs: object) -> None:
        raise AssertionError("the attack ran before the output was checked")

    monkeypatch.setattr(Attack, "__call__", never)


# --- item 1: never destroy an input -------------------------------------------------------------------------


def same_path(tmp: Path, files: dict[str, Path]) -> Path:
    return files["input"]


def symlink(tmp: Path, files: dict[str, Path]) -> Path:
    (tmp / "link.wav").symlink_to(files["input"])
    return tmp / "link.wav"


def hard_link(tmp: Path, files: dict[str, Path]) -> Path:
    os.link(files["input"], tmp / "hard.wav")
    return tmp / "hard.wav"


def linked_folder(tmp: Path, files: dict[str, Path]) -> Path:
    (tmp / "alias").symlink_to(tmp, target_is_directory=True)
    return tmp / "alias" / files["input"].name


@pytest.mark.timeout(60)
@pytest.mark.parametrize("make_output", [same_path, symlink, hard_link, linked_folder])
def test_an_output_that_is_the_input_is_refused_and_the_input_kept(
        make_output: Any, files: dict[str, Path], tmp_path: Path, never_attacks: None,
        capsys: pytest.CaptureFixture[str]) -> None:
    """Before: `--output X --input X` (and the same path through a linked folder) replaced the user's WAV with the
    adversarial one, exit 0/1; through a link it replaced the link."""
    before = files["input"].read_bytes()
    output = make_output(tmp_path, files)
    assert attack(files, output) == 2
    assert capsys.readouterr().err == (f"advaudio attack: error: --output {output} is the same file as --input "
                                       f"{files['input']}: it would be overwritten; choose another output name\n")
    assert files["input"].read_bytes() == before and output.read_bytes() == before


@pytest.mark.timeout(60)
def test_an_output_that_is_the_checkpoint_is_refused(files: dict[str, Path], tmp_path: Path, never_attacks: None,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    before = files["checkpoint"].read_bytes()
    os.link(files["checkpoint"], tmp_path / "weights.wav")
    assert attack(files, tmp_path / "weights.wav") == 2
    assert capsys.readouterr().err == (f"advaudio attack: error: --output {tmp_path / 'weights.wav'} is the same file "
                                       f"as --checkpoint {files['checkpoint']}: it would be overwritten; choose "
                                       "another output name\n")
    assert files["checkpoint"].read_bytes() == before


@pytest.mark.timeout(60)
def test_an_output_that_is_an_existing_folder_is_refused_before_the_attack(
        files: dict[str, Path], tmp_path: Path, never_attacks: None, capsys: pytest.CaptureFixture[str]) -> None:
    """Before: the attack ran first, then the write failed ("cannot write WAV file ...: Is a directory")."""
    folder = tmp_path / "taken.wav"
    folder.mkdir()
    assert attack(files, folder) == 2
    assert capsys.readouterr().err == (f"advaudio attack: error: --output {folder} is a folder: give a file name in "
                                       f"it, e.g. {folder / 'adversarial.wav'}\n")
    assert not list(folder.iterdir())


@pytest.mark.timeout(60)
def test_a_device_that_does_not_exist_names_device_not_the_checkpoint(
        files: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Before: "cannot read checkpoint ...: don't know how to restore data location ... (tagged with cuda/foo)"."""
    assert attack(files, tmp_path / "adv.wav", "--device", "cuda/foo") == 2
    assert capsys.readouterr().err == ("advaudio attack: error: --device must be auto, cpu, cuda, cuda:N or mps, "
                                       "got 'cuda/foo'\n")


@pytest.mark.timeout(60)
def test_a_failed_attack_exits_3_and_writes_nothing(files: dict[str, Path], tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    """Before: exit 1 (a crash's code too) and the non-adversarial attempt written as if it were the result. An
    earlier file at the output path is left as it was."""
    output = tmp_path / "adv.wav"
    output.write_bytes(b"an earlier result")
    assert attack(files, output, *UNFOOLABLE) == 3
    printed = capsys.readouterr().out
    assert "-> failed\n" in printed
    assert printed.splitlines()[-1].startswith("not fooled (6 model calls in ")
    assert printed.endswith(f"); nothing written to {output}\n")
    assert output.read_bytes() == b"an earlier result"


@pytest.mark.timeout(60)
def test_a_fooling_attack_exits_0_and_writes_its_wav(files: dict[str, Path], tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    output = tmp_path / "adv.wav"
    assert attack(files, output) == 0
    printed = capsys.readouterr().out
    assert "-> success\n" in printed and f"written to {output} (" in printed
    wave, rate = sf.read(output)
    assert rate == SAMPLE_RATE and wave.shape == (NUM_SAMPLES,)


# --- item 6: progress and limits ----------------------------------------------------------------------------


def run(files: dict[str, Path], output: Path, cfg: dict[str, Any], **kwargs: Any) -> tuple[craft.Crafted,
                                                                                               list[Progress]]:
    seen: list[Progress] = []
    done = craft_file(files["checkpoint"], files["input"], output, cfg, progress=seen.append, **kwargs)
    return done, seen


@pytest.mark.timeout(60)
def test_progress_reports_every_model_call_up_to_the_attacks_own_steps(files: dict[str, Path],
                                                                       tmp_path: Path) -> None:
    done, seen = run(files, tmp_path / "adv.wav", {"name": "pgdn", "eps": 0.0, "steps": 7})
    assert [p.calls for p in seen] == list(range(1, 8)) and {p.limit for p in seen} == {7}
    assert all(p.best_norm is None and p.best_snr_db is None for p in seen)  # nothing fooled it
    assert [p.seconds for p in seen] == sorted(p.seconds for p in seen)
    assert not done.success and done.output is None and done.calls == 7 and not done.timed_out


@pytest.mark.timeout(60)
def test_the_best_snr_so_far_is_the_snr_of_the_file_written(files: dict[str, Path], tmp_path: Path) -> None:
    output = tmp_path / "adv.wav"
    done, seen = run(files, output, {"name": "pgdn", "eps": 0.9, "lr": 0.2, "steps": 50})
    assert done.success and done.output == output
    clean = torch.from_numpy(sf.read(files["input"], dtype="float32")[0]).view(1, 1, -1)
    written = torch.from_numpy(sf.read(output, dtype="float32")[0]).view(1, 1, -1)
    measured = float(snr_db(clean, written)[0])
    assert seen[-1].best_snr_db == pytest.approx(measured, abs=1e-3)  # float32 file: ~1e-7 relative error
    assert done.snr_db == pytest.approx(measured, abs=1e-3) and seen[-1].calls == done.calls


@pytest.mark.timeout(60)
def test_max_seconds_stops_the_attack_at_its_next_model_call(files: dict[str, Path], tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    """A limit already passed when the first call returns: exactly one call, a clear result, exit 3, no file."""
    done, seen = run(files, tmp_path / "a.wav", {"name": "pgdn", "eps": 0.0, "steps": 500}, max_seconds=1e-9)
    assert done.timed_out and done.calls == 1 and len(seen) == 1 and done.output is None
    output = tmp_path / "b.wav"
    assert attack(files, output, "--attack", "pgdn", "eps=0", "--max-seconds", "1e-9") == 3
    assert "not fooled (stopped at --max-seconds 1e-09 after 1 model call in " in capsys.readouterr().out
    assert not output.exists()
    assert attack(files, output, "--max-seconds", "0") == 2
    assert capsys.readouterr().err == "advaudio attack: error: --max-seconds must be > 0, got 0.0\n"


class FoolsOnTheWay(Attack):
    """Evaluates a far-off input that fools the victim, then a close one, then returns the clean input."""

    fixed_budget = False
    family = "minimum_norm"

    def __init__(self, far: torch.Tensor, near: torch.Tensor) -> None:
        super().__init__(domain="waveform")
        self.far, self.near = far, near

    def run(self, model: ModelFn, x: torch.Tensor, labels: torch.Tensor, targets: torch.Tensor | None,
            bounds: Bounds, eps: float | None) -> RunOutput:
        model(torch.cat([self.far, x]))  # a batch: one fooling row, one not
        model(self.near)
        return RunOutput(x.clone(), torch.zeros(len(x), dtype=torch.int64))


@torch.no_grad()
def closer(victim: torch.nn.Module, clean: torch.Tensor, far: torch.Tensor) -> torch.Tensor:
    """The input nearest ``clean`` on a grid of 20 points of the segment to ``far`` (which changes ``victim``'s
    label) that changes it too by a margin (1e-4 in probability, far above float error: not a tie)."""
    label = int(victim(clean).argmax())
    for t in torch.linspace(0.05, 0.95, 19).tolist():
        probs = victim(clean + t * (far - clean)).softmax(-1)[0]
        if float(probs.max() - probs[label]) > 1e-4:
            return clean + t * (far - clean)
    pytest.fail("no point of the segment before `far` fools the victim")


@pytest.mark.timeout(60)
def test_an_attack_ending_on_a_weaker_iterate_writes_the_least_perturbed_fooling_input(
        files: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    read = lambda path: torch.from_numpy(sf.read(path, dtype="float32")[0]).view(1, 1, -1)  # noqa: E731
    assert attack(files, tmp_path / "far.wav") == 0
    clean, far = read(files["input"]), read(tmp_path / "far.wav")
    near = closer(registry_victim().eval(), clean, far)
    monkeypatch.setattr(craft, "create_attack", lambda *_args, **_kwargs: FoolsOnTheWay(far, near))
    done, seen = run(files, tmp_path / "adv.wav", {"name": "fools_on_the_way"})
    assert done.success and done.calls == 2
    assert torch.equal(read(tmp_path / "adv.wav"), near)  # a float WAV holds the float32 samples exactly
    assert seen[0].best_snr_db == pytest.approx(float(snr_db(clean, far)[0]), rel=1e-6)
    assert seen[1].best_snr_db == pytest.approx(float(snr_db(clean, near)[0]), rel=1e-6)
    assert seen[1].best_snr_db > seen[0].best_snr_db


class RecordingBar:
    """Stands in for tqdm: records what ``advaudio attack`` shows."""

    bars: list["RecordingBar"] = []

    def __init__(self, total: int | None = None, **kwargs: Any) -> None:
        self.total, self.kwargs, self.n, self.postfixes, self.closed = total, kwargs, 0, [], False
        RecordingBar.bars.append(self)

    def set_postfix_str(self, text: str, refresh: bool = True) -> None:
        self.postfixes.append(text)

    def update(self, n: int = 1) -> None:
        self.n += n

    def close(self) -> None:
        self.closed = True


@pytest.mark.timeout(60)
def test_the_progress_bar_shows_calls_and_the_best_so_far_on_stderr(
        files: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    args = ["attack", "--checkpoint", str(files["checkpoint"]), "--input", str(files["input"])]
    assert main([*args, "--output", str(tmp_path / "a.wav"), *UNFOOLABLE]) == 3
    captured = capsys.readouterr()
    assert "attack pgdn" in captured.err and "/6 " in captured.err and "attack pgdn" not in captured.out
    monkeypatch.setattr("tqdm.tqdm", RecordingBar)
    RecordingBar.bars = []
    assert main([*args, "--output", str(tmp_path / "b.wav"), *UNFOOLABLE]) == 3
    bar, = RecordingBar.bars
    assert bar.total == 6 and bar.n == 6 and bar.closed and bar.postfixes == ["not fooled yet"] * 6
    RecordingBar.bars = []
    assert main([*args, "--output", str(tmp_path / "c.wav"), *FOOLING]) == 0
    bar, = RecordingBar.bars
    snr = float(capsys.readouterr().out.split("SNR: ")[1].split(" dB")[0])
    assert bar.postfixes[0] == "not fooled yet" or bar.n == 1
    best = float(bar.postfixes[-1].removeprefix("best SNR ").removesuffix(" dB"))
    assert abs(best - snr) <= 0.05 + 0.005  # the bar rounds to 0.1 dB, the result line to 0.01 dB
    RecordingBar.bars = []
    assert main([*args, "--output", str(tmp_path / "d.wav"), *UNFOOLABLE, "--no-progress"]) == 3
    assert not RecordingBar.bars

