"""``advaudio ui`` owns its processes (issue 17 item 5), with real processes and no browser: stopped by SIGINT or
SIGTERM to its own process, it leaves no process of its server's group (uvicorn and its workers; MLflow's job
runner is not started) and frees the port, and killed (SIGKILL) its server's group stops by itself; a server that dies
is a one-line error and nothing is left; a port that is not a TCP port or not free, and a tracking server that does
not answer, are one-line errors before any address is printed; a UI that does not answer in time is stopped whole."""
from __future__ import annotations

import os
import select
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from mlflow_server import free_port

WAIT_S = 600.0
"""Bound of every wait for the UI to come up (generous: the test machine is shared)."""


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}


def _ui(tmp_path: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "defense.cli", "ui", "--outputs", str(tmp_path / "out"), *args]


def _children(pid: int) -> dict[int, int]:
    """The children of ``pid`` and their process groups (read from /proc)."""
    children = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid, pgrp = stat[stat.rindex(")") + 2:].split()[1:3]
        if int(ppid) == pid:
            children[int(entry.name)] = int(pgrp)
    return children


def _group_commands(pgid: int) -> list[str]:
    """The command lines of the processes in process group ``pgid`` (read from /proc)."""
    commands = []
    for entry in Path("/proc").iterdir():
        try:
            stat = (entry / "stat").read_text()
            if entry.name.isdigit() and int(stat[stat.rindex(")") + 2:].split()[2]) == pgid:
                commands.append((entry / "cmdline").read_bytes().replace(b"\0", b" ").decode())
        except (OSError, ValueError):
            continue
    return commands


def _gone(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return True
    return False


def _port_free(port: int) -> bool:
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _start_ui(tmp_path: Path, port: int) -> tuple[subprocess.Popen[str], dict[int, int]]:
    """``advaudio ui`` in its own session, once it printed its address (the UI then answers); with its children
    (the server) and their process groups."""
    proc = subprocess.Popen(_ui(tmp_path, "--port", str(port)), env=_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    assert proc.stdout is not None
    try:
        deadline, printed = time.monotonic() + WAIT_S, ""
        while "MLflow UI on " not in printed or not printed.endswith("\n"):
            ready, _, _ = select.select([proc.stdout], [], [], 1.0)
            assert time.monotonic() < deadline and proc.poll() is None, "the UI did not come up"
            if ready:  # read what is there (readline could wait on a line that is not complete)
                printed += os.read(proc.stdout.fileno(), 65536).decode()
        assert f"MLflow UI on http://127.0.0.1:{port} " in printed, printed
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=30) as resp:  # printed once it answers
            assert resp.status == 200
        return proc, _children(proc.pid)
    except BaseException:
        _stop_all(proc, {proc.pid, *_children(proc.pid).values()})
        raise


def _stop_all(proc: subprocess.Popen[str], groups: set[int]) -> None:
    """Whatever the test saw, leave nothing running."""
    for pgid in groups:
        if not _gone(pgid):
            os.killpg(pgid, signal.SIGKILL)
    if proc.poll() is None:
        proc.kill()
    proc.wait(timeout=60)  # killed, it is reaped at once; never hang on it


@pytest.mark.slow
@pytest.mark.timeout(1200)
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGKILL])
def test_stopping_ui_stops_its_server_group_and_frees_the_port(sig: signal.Signals, tmp_path: Path) -> None:
    """SIGINT and SIGTERM: advaudio ui stops its server's group before it exits (one line, 128 + signal); SIGKILL:
    the group's leader sees its parent die and stops the group."""
    port = free_port()
    proc, children = _start_ui(tmp_path, port)
    groups = {proc.pid, *children.values()}  # advaudio's own group and its server's
    try:
        server = [cmd for pgid in set(children.values()) for cmd in _group_commands(pgid)]
        assert any("uvicorn" in cmd for cmd in server), server
        assert not [cmd for cmd in server if "mlflow.server.jobs" in cmd], "MLflow's job runner was started"
        os.kill(proc.pid, sig)  # to the process alone, as `kill` or a supervisor sends it
        out, err = proc.communicate(timeout=WAIT_S)
        deadline = time.monotonic() + (WAIT_S if sig == signal.SIGKILL else 0.0)
        while not all(_gone(pgid) for pgid in groups) and time.monotonic() < deadline:
            time.sleep(0.5)
        left = [pgid for pgid in groups if not _gone(pgid)]
        assert not left, f"process groups still running after advaudio ui exited: {left}"
        assert _port_free(port)
        if sig == signal.SIGKILL:
            assert proc.returncode == -signal.SIGKILL
            return
        assert proc.returncode == 128 + sig, err[-3000:]
        assert "Traceback" not in err, err[-3000:]
        assert err.strip().splitlines()[-1] == f"advaudio ui: interrupted ({sig.name})"
    finally:
        _stop_all(proc, groups)


@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_a_ui_server_that_dies_is_one_line_and_leaves_nothing(tmp_path: Path) -> None:
    port = free_port()
    proc, children = _start_ui(tmp_path, port)
    groups = {proc.pid, *children.values()}
    try:
        assert len(children) == 1, children
        os.kill(next(iter(children)), signal.SIGKILL)  # the server's main process dies (OOM killer), its workers not
        out, err = proc.communicate(timeout=WAIT_S)
        assert proc.returncode == 1, err[-3000:]
        assert "Traceback" not in err, err[-3000:]
        assert err.strip().splitlines()[-1].startswith("advaudio ui: error: the MLflow UI stopped by itself (exit code -9")
        assert all(_gone(pgid) for pgid in groups)
        assert _port_free(port)
    finally:
        _stop_all(proc, groups)


def _run_ui(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Run ``advaudio ui`` to its end (bounded); whatever it started in its group is killed after."""
    proc = subprocess.Popen(_ui(tmp_path, *args), env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=150)
    finally:
        _stop_all(proc, {proc.pid})
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def _one_line_error(done: subprocess.CompletedProcess[str], *expected: str) -> None:
    assert done.returncode == 2, done.stderr
    assert done.stdout == "", done.stdout  # no address printed
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("advaudio ui: error: "), lines
    assert all(part in lines[0] for part in expected), lines[0]


@pytest.mark.timeout(180)
@pytest.mark.parametrize("port", ["99999", "0", "-1"])
def test_a_port_out_of_range_is_one_line(port: str, tmp_path: Path) -> None:
    done = _run_ui(tmp_path, "--port", port)
    _one_line_error(done, f"--port {port} is not a TCP port (1-65535)")


@pytest.mark.timeout(180)
def test_a_port_in_use_is_one_line(tmp_path: Path) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        done = _run_ui(tmp_path, "--port", str(port))
    _one_line_error(done, f"port {port} on 127.0.0.1 is not free")


@pytest.mark.timeout(180)
def test_a_dead_tracking_server_is_one_line(tmp_path: Path) -> None:
    dead = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    done = _run_ui(tmp_path, "--tracking-uri", dead, "--port", str(free_port()))
    _one_line_error(done, f"MLflow server at {dead} is not reachable")
    assert "rerun" not in done.stderr


@pytest.mark.timeout(300)
def test_a_ui_that_does_not_answer_in_time_is_stopped_whole(tmp_path: Path) -> None:
    from defense.ui_server import ServerError, UiServer

    server = UiServer(f"sqlite:///{tmp_path / 'mlflow.db'}", free_port(), start_timeout=1.0)
    with pytest.raises(ServerError, match=r"did not answer on http://127\.0\.0\.1:\d+ within 1 s"):
        with server:
            pass
    assert server.pgid is not None and _gone(server.pgid)
    assert server.log_path is not None and server.log_path.exists()  # named in the message, kept
    server.log_path.unlink()
