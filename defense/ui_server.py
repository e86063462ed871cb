"""The MLflow UI server that ``advaudio ui`` starts, owned as one process group.

``mlflow ui`` starts uvicorn and its worker processes; MLflow's job runner (GenAI scorer jobs, which this tool never
submits: eight more processes, about 16 s of CPU at each start) is left off unless the environment sets
``MLFLOW_SERVER_ENABLE_JOB_EXECUTION`` (:data:`SERVER_ENV`). Started in a session of its own
(``start_new_session``), they form one process group that :class:`UiServer` stops whole: SIGTERM to the group, then
SIGKILL to whatever is left after ``STOP_GRACE_S`` — when ``advaudio ui`` is stopped (SIGINT, SIGTERM:
:mod:`defense.interrupt`), fails, or the server dies. A terminal's Ctrl-C no longer reaches
the server's processes directly (their tracebacks), only ``advaudio ui``, which stops them. The group's leader is
:func:`supervise`, which stops the group when ``advaudio ui`` dies without a chance to (``kill -9``).

Before anything is printed the port is checked (a TCP port, free on 127.0.0.1), and the addresses are printed
once the server answers ``/health``; a server that exits or does not answer within ``START_TIMEOUT_S`` is a
:class:`ServerError` naming its log.
"""
from __future__ import annotations

import ctypes
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from types import FrameType, TracebackType
from typing import NoReturn

from victims.registry import ConfigError

START_TIMEOUT_S = 300.0
"""How long the server may take to answer ``/health`` (imports and the store's migrations: ~1 minute on two
busy cores)."""
STOP_GRACE_S = 15.0
"""How long the server's processes get to exit on SIGTERM before SIGKILL."""
POLL_S = 0.25
SERVER_ENV = {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
"""Settings the server gets unless the environment has its own: no job runner (its huey consumers cost 2.5× the
server's own start-up CPU, measured 2026-12-04, MLflow 3.17)."""
PR_SET_PDEATHSIG = 1
"""Linux ``prctl`` option: the signal a process gets when its parent dies."""


class ServerError(RuntimeError):
    """The UI server did not come up, or stopped by itself (one line naming its log)."""


def check_port(port: int, host: str = "127.0.0.1") -> None:
    """Raise a one-line ConfigError unless ``port`` is a TCP port that can be bound on ``host`` now."""
    if not 1 <= port <= 65535:
        raise ConfigError(f"--port {port} is not a TCP port (1-65535)")
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server binds: TIME_WAIT is free
        try:
            probe.bind((host, port))
        except OSError as err:
            raise ConfigError(f"port {port} on {host} is not free ({err.strerror}): stop what holds it or pick "
                              "another --port") from None


def group_alive(pgid: int) -> bool:
    """Whether any process of the process group ``pgid`` remains."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # a member runs as another user: it exists
        return True
    return True


class UiServer:
    """``mlflow ui`` over ``store_uri`` on ``host:port`` in its own process group, as a context manager that
    starts it (returning once it answers) and stops the whole group on leaving, whatever the reason.

    Args:
        store_uri: the backend store (the tracking URI).
        port: the port (checked with :func:`check_port` first).
        host: the interface (127.0.0.1: the UI is not exposed to the network).
        start_timeout: how long it may take to answer ``/health``, in seconds.

    Attributes:
        pgid: the server's process group (set once started).
        log_path: its output (removed when it stops, kept after a :class:`ServerError`).
    """

    def __init__(self, store_uri: str, port: int, host: str = "127.0.0.1",
                 start_timeout: float = START_TIMEOUT_S) -> None:
        self.store_uri, self.port, self.host, self.start_timeout = store_uri, port, host, start_timeout
        self.url = f"http://{host}:{port}"
        self.proc: subprocess.Popen[bytes] | None = None
        self.pgid: int | None = None
        self.log_path: Path | None = None

    def __enter__(self) -> UiServer:
        try:
            self.start()
        except BaseException as err:  # a failed start or Ctrl-C while waiting: nothing may be left running
            self.stop(keep_log=isinstance(err, ServerError))
            raise
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop(keep_log=exc_type is ServerError)

    def start(self) -> None:
        """Start the server and wait until it answers ``/health`` (use the context manager, which stops it
        whatever happens).

        Raises:
            ConfigError: the port is not a TCP port or not free.
            ServerError: the server exited, or did not answer within ``start_timeout``.
        """
        check_port(self.port, self.host)
        fd, log_name = tempfile.mkstemp(prefix="advaudio-ui-", suffix=".log")
        self.log_path = Path(log_name)
        cmd = [sys.executable, "-m", __name__, str(os.getpid()), sys.executable, "-m", "mlflow", "ui",
               "--backend-store-uri", self.store_uri, "--host", self.host, "--port", str(self.port), "--workers", "1"]
        with os.fdopen(fd, "wb") as log:
            self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                         start_new_session=True, env={**SERVER_ENV, **os.environ})
        self.pgid = self.proc.pid  # the session leader (:func:`supervise`): its pid is its group's id
        deadline = time.monotonic() + self.start_timeout
        while not self._answers():
            if self.proc.poll() is not None:
                raise ServerError(f"the MLflow UI exited with code {self.proc.returncode} before answering "
                                  f"({self._last_log_line()}; log: {self.log_path})")
            if time.monotonic() > deadline:
                raise ServerError(f"the MLflow UI did not answer on {self.url} within {self.start_timeout:g} s "
                                  f"(log: {self.log_path})")
            time.sleep(POLL_S)

    def wait(self) -> NoReturn:
        """Block while the server runs.

        Raises:
            ServerError: when it stops by itself.
        """
        assert self.proc is not None, "start() first"
        code = self.proc.wait()
        raise ServerError(f"the MLflow UI stopped by itself (exit code {code}; {self._last_log_line()}; "
                          f"log: {self.log_path})")

    def stop(self, keep_log: bool = False) -> None:
        """SIGTERM the server's process group, SIGKILL what is left after ``STOP_GRACE_S``, and wait until no
        process of the group remains; the log is removed unless ``keep_log``."""
        if self.proc is not None and self.pgid is not None:
            for sig in (signal.SIGTERM, signal.SIGKILL):
                try:
                    os.killpg(self.pgid, sig)
                except ProcessLookupError:  # the whole group has exited
                    break
                deadline = time.monotonic() + STOP_GRACE_S
                while group_alive(self.pgid) and time.monotonic() < deadline:
                    self.proc.poll()  # reaps the leader; the group's other members are reaped by their parents
                    time.sleep(POLL_S)
            self.proc.wait()
            self.proc = None
        if self.log_path is not None and not keep_log:
            self.log_path.unlink(missing_ok=True)

    def _answers(self) -> bool:
        try:
            with urllib.request.urlopen(self.url + "/health", timeout=2) as resp:
                return resp.status == 200
        except OSError:
            return False

    def _last_log_line(self) -> str:
        lines = [line.strip() for line in self.log_path.read_text(errors="replace").splitlines() if line.strip()]
        return f"last log line: {lines[-1][:300]}" if lines else "nothing logged"


def supervise(parent: int, cmd: list[str]) -> int:
    """The server group's leader: run ``cmd`` (``mlflow ui``) in this process group and stop the group on
    SIGTERM — which Linux also sends when ``parent`` (``advaudio ui``) dies, even by SIGKILL
    (``prctl(PR_SET_PDEATHSIG)``), so no server outlives the command. Returns ``cmd``'s exit code."""
    def stop(signum: int, frame: FrameType | None) -> None:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        os.killpg(0, signal.SIGTERM)

    signal.signal(signal.SIGTERM, stop)
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except AttributeError:  # not Linux: the parent stops the group when it is stopped (SIGINT, SIGTERM, exit)
        pass
    if os.getppid() != parent:  # the parent died before the request took effect
        return 0
    return subprocess.Popen(cmd).wait()


if __name__ == "__main__":
    sys.exit(supervise(int(sys.argv[1]), sys.argv[2:]))
