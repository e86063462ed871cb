"""A real Ray cluster (issue 10 item 2): a head and a second worker node started with ``ray start`` on this
machine, a grid sent to it with ``ray_address``, and the worker process running a model column killed
(SIGKILL) mid-task: the task is retried, the grid completes, no run is duplicated, and the tables equal an
uninterrupted run of the local executor with the workers' thread count (a Ray task
with ``num_cpus=1`` gets ``OMP_NUM_THREADS=1``; a different thread count changes float reductions' order, and with
it the last bits of the weights)."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from secrets import token_hex
from pathlib import Path
from typing import Iterator

import pytest

from defense import runner
from grid_runs import RUN_S, grid_command, grid_env, tables
from mlflow_server import free_port
from tiny_configs import RESUMED

pytestmark = pytest.mark.slow
RAY = str(Path(sys.executable).with_name("ray"))
STOP_GRACE_S = 3.0
"""How long a node may take to stop on SIGTERM before its group is killed."""


def _start(args: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
    """``ray start ... --block`` in its own session, so the node's processes can be killed as one group."""
    return subprocess.Popen([RAY, "start", *args, "--num-cpus=1", "--node-ip-address=127.0.0.1", "--block"], env=env,
                            start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _stop(node: subprocess.Popen[bytes]) -> None:
    """SIGTERM the node's process group, then SIGKILL it: a worker node stops in about a second, a head started
    with ``--block`` not at all (Ray 2.60; measured: no exit within 15 s), so its grace is short."""
    for sig, grace in ((signal.SIGTERM, STOP_GRACE_S), (signal.SIGKILL, 10.0)):
        try:
            os.killpg(node.pid, sig)
            node.wait(timeout=grace)
            return
        except (ProcessLookupError, subprocess.TimeoutExpired):
            continue


def _wait_for_cpus(address: str, env: dict[str, str], cpus: int, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = subprocess.run([RAY, "status", f"--address={address}"], env=env, capture_output=True, text=True,
                                timeout=timeout)
        if f"/{cpus}.0 CPU" in status.stdout:
            return
        time.sleep(1)
    raise RuntimeError(f"the Ray cluster at {address} did not reach {cpus} CPUs")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A head and a worker node (1 CPU each), token-authenticated; the driver gets the same token."""
    secrets = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": token_hex(32), "RAY_USAGE_STATS_ENABLED": "0"}
    saved = {k: os.environ.get(k) for k in secrets}
    os.environ.update(secrets)
    env = {**os.environ, "ADVAUDIO_CACHE": str(tmp_path_factory.mktemp("cache"))}
    address = f"127.0.0.1:{free_port()}"
    nodes = [_start(["--head", f"--port={address.split(':')[1]}", "--include-dashboard=false"], env)]
    try:
        _wait_for_cpus(address, env, 1)
        nodes.append(_start([f"--address={address}"], env))
        _wait_for_cpus(address, env, 2)
        yield address
    finally:
        for node in reversed(nodes):
            _stop(node)
        for k, v in saved.items():
            os.environ.pop(k) if v is None else os.environ.__setitem__(k, v)


COLUMN_TASK = f"ray::{runner._column_task.__name__}".encode()


def _column_workers() -> list[int]:
    """PIDs of Ray workers running a model column (Ray names a worker after its task: ``ray::_column_task``)."""
    pids = []
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and (proc / "cmdline").read_bytes().startswith(COLUMN_TASK):
                pids.append(int(proc.name))
        except OSError:
            continue
    return pids


def _kill_after_first_epoch(outputs: Path, killed: list[int], stop: threading.Event) -> None:
    """SIGKILL the column's worker once it has written a training checkpoint (mid-task)."""
    while not stop.is_set():
        workers = _column_workers()
        if workers and list((outputs / "checkpoints").glob("*.train.pt")):
            for pid in workers:
                os.kill(pid, signal.SIGKILL)
            killed.extend(workers)
            return
        time.sleep(0.05)


def _on_cluster(grid_file: Path, outputs: Path, address: str) -> None:
    """The grid through the CLI in its own process (Ray keeps one connection and token per process), on the cluster
    at ``address``."""
    done = subprocess.run(grid_command(grid_file, outputs, "--executor", "ray", "--ray-address", address),
                          capture_output=True, text=True, env=grid_env(outputs.parent), timeout=RUN_S)
    assert done.returncode == 0, done.stderr[-3000:]


def test_grid_on_a_cluster_survives_a_killed_worker(cluster: str, tmp_path: Path, clean_tables: str) -> None:
    """The reference is the local executor's run (``clean_tables``): equal tables show at once that the retry lost
    and doubled nothing and that the cluster computes what the local executor does (an uninterrupted cluster run
    adds no check)."""
    grid_file = tmp_path / "tiny.yaml"
    grid_file.write_text(RESUMED)
    crashed = tmp_path / "crashed"
    killed: list[int] = []
    stop = threading.Event()
    killer = threading.Thread(target=_kill_after_first_epoch, args=(crashed, killed, stop), daemon=True)
    killer.start()
    try:
        _on_cluster(grid_file, crashed, cluster)
    finally:
        stop.set()
        killer.join(timeout=60)
    assert killed, "no column worker was killed: the test did not exercise a retry"
    from evaluation.tracking import iter_runs, setup_tracking

    exp_id = setup_tracking("tiny", None, crashed)
    keys = [(r.data.tags.get("advaudio.kind"), r.data.tags.get("advaudio.defense"), r.data.tags.get("advaudio.attack"))
            for r in iter_runs(exp_id)]
    assert len(keys) == len(set(keys)) == 1 + 2 + 4 + 1  # grid, two trained models, four attack runs, transfer
    assert tables(crashed) == clean_tables
