"""One process at a time: an OS file lock (``fcntl.flock``) on ``<folder>/<name>.lock``.

The kernel releases the lock when its holder's file is closed, however the holder ends (``kill -9`` and a
crash included), so a waiter never waits for a dead process and there is no stale lock to clean up. The lock
files stay (a few bytes each: who holds or last held it); deleting one while a process waits on it would let
a third process lock a new file of the same name, so they are never deleted or replaced.

Where commands run on several machines, the folder must be on a file system whose ``flock`` works across
them (NFS v4, Lustre and most cluster file systems; not NFS v3 without ``lockd``).
"""
from __future__ import annotations

import fcntl
import hashlib
import logging
import os
import re
import socket
import time
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Iterator

from training.files import OutputError, make_folder
from victims.registry import ConfigError

log = logging.getLogger(__name__)
TIMEOUT_ENV = "ADVAUDIO_LOCK_TIMEOUT"
"""Seconds a command waits for a lock another process holds before it stops with one line (unset: no limit;
``0``: refuse at once)."""
POLL_S = 0.2
_SAFE_NAME = re.compile(r"[A-Za-z0-9_.-]{1,100}")
_held: set[Path] = set()


class LockTimeout(OutputError):
    """A lock another process held for longer than the command's :data:`TIMEOUT_ENV`."""


def lock_timeout() -> float | None:
    """The waiting limit from ``$ADVAUDIO_LOCK_TIMEOUT`` (``None``: wait as long as the holder works).

    Raises:
        ConfigError: for a value that is not a number of seconds ≥ 0.
    """
    text = os.environ.get(TIMEOUT_ENV, "").strip()
    if not text:
        return None
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value >= 0:  # also NaN
        raise ConfigError(f"{TIMEOUT_ENV} must be a number of seconds >= 0, got '{text}'")
    return value


def lock_path(folder: Path, name: str) -> Path:
    """The lock file of ``name`` (names that are not short and file-safe are hashed)."""
    stem = name if _SAFE_NAME.fullmatch(name) else hashlib.sha256(name.encode()).hexdigest()[:24]
    return folder / f"{stem}.lock"


@contextmanager
def exclusive(folder: Path, name: str, what: str, timeout: float | None = None, quiet: bool = False
              ) -> Iterator[None]:
    """Hold the lock ``name`` in ``folder`` for the ``with`` block, waiting while another process holds it.

    A wait logs one warning naming ``what``, ``name`` and the holding process (unless ``quiet``: a lock
    held for a moment).

    Args:
        folder: where the lock files live (created if missing).
        name: what is locked (a run key).
        what: how messages name it (e.g. ``"training gm_instruments/stft_db_small/resnet18/none"``).
        timeout: seconds to wait at most; default :func:`lock_timeout`.
        quiet: wait without a warning.

    Raises:
        LockTimeout: when another process still holds it after ``timeout`` seconds.
        RuntimeError: when this process already holds it (a nested ``with`` would wait for itself).
    """
    path = lock_path(make_folder(folder, "lock folder"), name)
    if path in _held:
        raise RuntimeError(f"lock {path} is already held by this process ({what})")
    limit = lock_timeout() if timeout is None else timeout
    with open(path, "a+", encoding="utf-8") as handle:  # "a+": never truncated on open, the lock is on this file
        _acquire(handle, path, name, what, limit, quiet)
        _held.add(path)
        try:
            handle.seek(0)
            handle.truncate()
            handle.write(f"process {os.getpid()} on {socket.gethostname()}: {what}\n")
            handle.flush()
            yield
        finally:
            _held.discard(path)
            fcntl.flock(handle, fcntl.LOCK_UN)


def _acquire(handle: IO[str], path: Path, name: str, what: str, limit: float | None, quiet: bool) -> None:
    """``flock`` ``handle``, polling (so that ``limit`` and Ctrl-C are honoured) and saying once who it waits for."""
    start = time.monotonic()
    told = quiet
    while True:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            pass
        holder = _holder(path)
        if limit is not None and time.monotonic() - start >= limit:
            raise LockTimeout(f"{what} ({name}) is held by {holder} (waited {limit:g} s, {TIMEOUT_ENV}); rerun "
                              "once it ends, and the finished run is reused")
        if not told:
            log.warning("waiting for %s (%s): %s holds it", what, name, holder)
            told = True
        time.sleep(POLL_S)


def _holder(path: Path) -> str:
    """Who holds the lock, as its holder wrote it (it writes right after locking: read again once if empty)."""
    for _ in range(2):
        text = path.read_text(encoding="utf-8").strip()
        if text:
            return text.split(":", 1)[0]
        time.sleep(POLL_S)
    return "another process"
