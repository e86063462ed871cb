"""``kill -9`` of a grid (issue 10 item 5): killed while a model trains and while an attack is evaluated, the
rerun of the same command resumes (training from its last epoch's checkpoint, finished runs reused) and ends
with tables identical to an uninterrupted run, with the local executor and with the Ray executor (a local Ray
instance the CLI starts; the kill takes its process group, the driver and the Ray processes it started, as a
crashed machine would). A killed Ray *worker* on a cluster is tests/test_ray_cluster.py's case."""
from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Callable

import pytest

from evaluation.tracking import iter_runs, setup_tracking
from grid_runs import RUN_S, grid_command, grid_env, tables
from tiny_configs import RESUMED

pytestmark = pytest.mark.slow
KILLED_S = 60.0
"""Bound of the wait for a SIGKILLed process group to be reaped."""


def _kill_when(cmd: list[str], env: dict[str, str], ready: Callable[[], bool], timeout: float = RUN_S) -> bool:
    """Start ``cmd`` in its own process group; SIGKILL the group once ``ready()``; return whether it was killed
    (not finished first). A command neither ready nor finished within ``timeout`` is killed and fails the test."""
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + timeout
    while proc.poll() is None and time.monotonic() < deadline:
        if ready():
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=KILLED_S)
            return True
        time.sleep(0.02)
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=KILLED_S)
        pytest.fail(f"{' '.join(cmd[2:4])}: neither ready to kill nor finished within {timeout:.0f} s")
    return False


def _no_duplicates(outputs: Path) -> None:
    exp_id = setup_tracking("tiny", f"sqlite:///{(outputs / 'mlflow.db').resolve()}", outputs)
    keys = [tuple(r.data.tags.get(f"advaudio.{k}") for k in ("kind", "defense", "attack")) for r in iter_runs(exp_id)]
    assert len(keys) == len(set(keys)), keys


@pytest.mark.timeout(1200)  # a killed run and its resume via a local Ray start (and maybe the session's clean run)
@pytest.mark.parametrize(("moment", "executor"), [("training", "ray"), ("attack", "local")])
def test_a_killed_grid_resumes_to_the_same_tables(moment: str, executor: str, tmp_path: Path,
                                                  clean_tables: str) -> None:
    """Each moment on one executor (a training checkpoint through Ray, the attack runs locally): the resume code
    is the executors' common path (``defense.runner.run_column``), and the four pairs cost CI ten minutes."""
    grid_file = tmp_path / "tiny.yaml"
    grid_file.write_text(RESUMED)
    env = grid_env(tmp_path)
    killed = tmp_path / "killed"
    ckpts = killed / "checkpoints"
    if moment == "training":  # after the first model's first epoch, before it finishes
        def ready() -> bool:
            return any(ckpts.glob("*.train.pt")) and not any(ckpts.glob("*.victim.pt"))
    else:  # both models trained, attack runs under way
        def ready() -> bool:
            return len(list(ckpts.glob("*.victim.pt"))) == 2 and (killed / "mlartifacts").is_dir() and any(
                p.name == "evaluation.json" for p in (killed / "mlartifacts").rglob("evaluation.json"))
    command = grid_command(grid_file, killed, "--executor", executor)
    assert _kill_when(command, env, ready), f"the grid finished before the {moment} kill"
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=RUN_S)
    assert done.returncode == 0, done.stderr[-3000:]
    _no_duplicates(killed)
    assert tables(killed) == clean_tables
