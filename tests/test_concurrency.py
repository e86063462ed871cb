"""Two commands on one store at once (issue 17 item 2): real ``advaudio`` processes. A run key is owned by one
process at a time (a file lock the kernel releases when its holder dies): the second command waits, then reuses
the finished run, or resumes what a killed holder left; nothing is logged twice; a fresh store is created once.

Ordering is made certain by stopping a process (SIGSTOP) while it holds a lock, never by sleeping."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Iterator

import pytest
from mlflow.entities import Run
from mlflow.tracking import MlflowClient

from evaluation.locks import LockTimeout, exclusive, lock_timeout
from evaluation.tracking import iter_runs, setup_tracking
from victims.registry import ConfigError
from tiny_configs import TINY_FGSM

TRAIN = ["dataset.classes=[flute, hi_hat]", "dataset.clips_per_class=6", "dataset.clip_seconds=0.25",
         "dataset.sample_rate=8000", "dataset.split.test_fraction=0.34", "frontend=stft_db_small",
         "frontend.n_fft=128", "frontend.hop=64", "victim=resnet56", "train.epochs=4", "train.batch_size=8"]
WAIT_S = 1200.0
"""Longest a step of a test waits for a process: a command takes about a minute on 2 free cores, over ten
where six test runs share them."""
KILLED_S = 60.0
"""Bound of the wait for a SIGKILLed process to be reaped."""


class Command:
    """An ``advaudio`` command started in its own process group, its output in files (read while it runs)."""

    def __init__(self, args: list[str], folder: Path, name: str) -> None:
        env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
        env["ADVAUDIO_CACHE"] = str(folder / "cache")
        self.out, self.err = folder / f"{name}.out", folder / f"{name}.err"
        with open(self.out, "w") as out, open(self.err, "w") as err:
            self.proc = subprocess.Popen([sys.executable, "-m", "defense.cli", *args], env=env, stdout=out,
                                         stderr=err, start_new_session=True)

    def signal(self, sig: int) -> None:
        os.killpg(self.proc.pid, sig)

    def finish(self) -> tuple[int, str, str]:
        """Wait for the command; its exit status, stdout and stderr."""
        code = self.proc.wait(timeout=WAIT_S)
        return code, self.out.read_text(), self.err.read_text()


Start = Callable[[list[str], str], Command]
"""The ``start`` fixture: ``start(args, name)`` runs ``advaudio args``, output in ``<name>.out``/``.err``."""


@pytest.fixture
def start(tmp_path: Path) -> Iterator[Start]:
    """Start commands; whatever still runs when the test ends is killed."""
    started: list[Command] = []

    def run(args: list[str], name: str) -> Command:
        started.append(Command(args, tmp_path, name))
        return started[-1]

    yield run
    for command in started:
        if command.proc.poll() is None:
            command.signal(signal.SIGKILL)
            command.proc.wait(timeout=KILLED_S)


def _until(ready: Callable[[], bool], what: str, running: Command | None = None) -> None:
    deadline = time.monotonic() + WAIT_S
    while not ready():
        assert running is None or running.proc.poll() is None, f"the command ended before {what}"
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def _store(outputs: Path) -> str:
    return f"sqlite:///{(outputs / 'mlflow.db').resolve()}"


def _runs(outputs: Path, experiment: str) -> list[Run]:
    return list(iter_runs(setup_tracking(experiment, _store(outputs), outputs)))


def _logged_twice(runs: list[Run]) -> list[str]:
    """``run/metric@step`` of every metric with more than one value at one step."""
    client = MlflowClient()
    twice = []
    for run in runs:
        for key in run.data.metrics:
            steps = [m.step for m in client.get_metric_history(run.info.run_id, key)]
            twice += [f"{run.info.run_name}/{key}@{s}" for s in set(steps) if steps.count(s) > 1]
    return twice


def _train(start: Start, outputs: Path, name: str, verbose: bool = False) -> Command:
    return start([*(["-v"] if verbose else []), "train", "--outputs", str(outputs), *TRAIN], name)


def _training(outputs: Path) -> Callable[[], bool]:
    """Whether a training is between its first epoch's checkpoint and its end (it holds its run key)."""
    ckpts = outputs / "checkpoints"
    return lambda: any(ckpts.glob("*.train.pt")) and not any(ckpts.glob("*.victim.pt"))


def _one_finished_train_run(outputs: Path) -> Run:
    runs = _runs(outputs, "advaudio")
    assert len(runs) == 1, [r.info.run_name for r in runs]
    run = runs[0]
    assert run.data.tags["advaudio.status"] == "finished" and run.info.status == "FINISHED"
    assert not _logged_twice(runs), _logged_twice(runs)
    steps = [m.step for m in MlflowClient().get_metric_history(run.info.run_id, "val_loss")]
    assert sorted(steps) == [1, 2, 3, 4]
    return run


@pytest.mark.slow
@pytest.mark.timeout(2400)
def test_two_trains_on_a_fresh_outputs_both_succeed_with_one_run(start: Start, tmp_path: Path) -> None:
    """Both create the store at once (one waits for the other's schema), then one trains and one reuses."""
    outputs = tmp_path / "out"
    first, second = _train(start, outputs, "a"), _train(start, outputs, "b")
    results = [first.finish(), second.finish()]
    for code, _, err in results:
        assert code == 0, err[-3000:]
    run = _one_finished_train_run(outputs)
    assert [f"MLflow run: {run.info.run_id}" in out for _, out, _ in results] == [True, True]
    assert sum("(reused: finished before" in out for _, out, _ in results) == 1


@pytest.mark.slow
@pytest.mark.timeout(2400)
def test_a_second_train_waits_for_the_first_and_reuses_its_run(start: Start, tmp_path: Path) -> None:
    outputs = tmp_path / "out"
    setup_tracking("advaudio", _store(outputs), outputs)  # an existing store
    first = _train(start, outputs, "a")
    _until(_training(outputs), "the first command's training", first)
    first.signal(signal.SIGSTOP)  # it holds the run key while stopped
    second = _train(start, outputs, "b")
    _until(lambda: "waiting for training" in second.err.read_text(), "the second command to wait", second)
    assert f"process {first.proc.pid} " in second.err.read_text()
    first.signal(signal.SIGCONT)
    (code_a, out_a, err_a), (code_b, out_b, err_b) = first.finish(), second.finish()
    assert code_a == 0 and code_b == 0, err_a[-2000:] + err_b[-2000:]
    run = _one_finished_train_run(outputs)
    assert f"MLflow run: {run.info.run_id}\n" in out_a
    assert f"MLflow run: {run.info.run_id} (reused: finished before, nothing trained or logged)" in out_b
    assert len([line for line in err_b.splitlines() if "waiting for" in line]) == 1


@pytest.mark.slow
@pytest.mark.timeout(2400)
def test_a_command_waiting_for_a_killed_holder_resumes_its_run(start: Start, tmp_path: Path) -> None:
    outputs = tmp_path / "out"
    setup_tracking("advaudio", _store(outputs), outputs)
    first = _train(start, outputs, "a")
    _until(_training(outputs), "the first command's training", first)
    first.signal(signal.SIGSTOP)
    (started,) = _runs(outputs, "advaudio")
    second = _train(start, outputs, "b", verbose=True)
    _until(lambda: "waiting for training" in second.err.read_text(), "the second command to wait", second)
    first.signal(signal.SIGKILL)  # kill -9 of the lock's holder: the kernel releases its lock
    assert first.proc.wait(timeout=WAIT_S) == -signal.SIGKILL
    code, out, err = second.finish()
    assert code == 0, err[-3000:]
    run = _one_finished_train_run(outputs)
    assert run.info.run_id == started.info.run_id and f"MLflow run: {run.info.run_id}\n" in out
    assert "resumed from" in err and "after epoch" in err


@pytest.mark.slow
@pytest.mark.timeout(3000)
def test_two_experiments_at_once_log_nothing_twice(start: Start, tmp_path: Path) -> None:
    grid_file = tmp_path / "tiny.yaml"
    grid_file.write_text(TINY_FGSM)
    outputs = tmp_path / "out"
    setup_tracking("tiny", _store(outputs), outputs)
    args = ["experiment", str(grid_file), "--outputs", str(outputs), "--no-progress"]
    commands = [start(args, "a"), start(args, "b")]
    for code, _, err in [c.finish() for c in commands]:
        assert code == 0, err[-3000:]
    runs = _runs(outputs, "tiny")
    cells = [tuple(r.data.tags.get(f"advaudio.{k}") for k in ("kind", "defense", "attack", "mode")) for r in runs]
    assert len(cells) == len(set(cells)), sorted(map(str, cells))
    assert {c[0] for c in cells} >= {"grid", "train", "attack"} and len([c for c in cells if c[0] == "attack"]) == 2
    assert all(r.data.tags.get("advaudio.status") == "finished" for r in runs)
    assert not _logged_twice(runs), _logged_twice(runs)


HOLD = """
import sys
from pathlib import Path
from evaluation.locks import exclusive
with exclusive(Path(sys.argv[1]), "3f2a9c0e81d4", "training x/y"):
    print("held", flush=True)
    sys.stdin.read()
"""


@pytest.mark.timeout(120)
def test_a_lock_is_refused_while_held_and_free_once_its_holder_is_killed(tmp_path: Path,
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(tmp_path)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "held\n"
        monkeypatch.setenv("ADVAUDIO_LOCK_TIMEOUT", "0")
        with pytest.raises(LockTimeout, match=f"training x/y \\(3f2a9c0e81d4\\) is held by process {holder.pid} on "):
            with exclusive(tmp_path, "3f2a9c0e81d4", "training x/y"):
                pass
        holder.kill()  # SIGKILL: no handler runs, the kernel closes its files and drops the lock
        holder.wait(timeout=KILLED_S)
        with exclusive(tmp_path, "3f2a9c0e81d4", "training x/y"):
            with pytest.raises(RuntimeError, match="already held by this process"):
                with exclusive(tmp_path, "3f2a9c0e81d4", "training x/y"):
                    pass
        assert (tmp_path / "3f2a9c0e81d4.lock").read_text().startswith(f"process {os.getpid()} on ")
    finally:
        holder.kill()
        holder.wait(timeout=KILLED_S)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("value", ["soon", "-1", "nan"])
def test_a_bad_lock_timeout_is_a_config_error(value: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ADVAUDIO_LOCK_TIMEOUT", value)
    with pytest.raises(ConfigError, match=f"ADVAUDIO_LOCK_TIMEOUT must be a number of seconds >= 0, got '{value}'"):
        lock_timeout()
