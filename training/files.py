"""Output files written whole or not at all, and one-line errors when they cannot be written.

Checkpoints, decoded-audio caches and adversarial WAVs all go through :func:`atomic_write`: the
content goes to a temporary file in the target's folder, is flushed to disk and renamed over the
target, so a full disk, a kill or any other error leaves the old file (or none) and no temporary file.
"""
from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path
from types import MappingProxyType
from typing import BinaryIO, Callable, Mapping

log = logging.getLogger(__name__)


class OutputError(OSError):
    """An output file or folder that cannot be written (one line naming it and the system's reason)."""


def os_reason(err: BaseException) -> str | None:
    """The system's reason for a failed write, or ``None`` if ``err`` is not an I/O failure.

    torch reports a failed ``write`` of its file object as a ``RuntimeError`` whose context holds the
    ``OSError``; that one is found too.
    """
    for candidate in (err, err.__cause__, err.__context__):
        if isinstance(candidate, OSError):
            return candidate.strerror or str(candidate) or type(candidate).__name__
    return None


def writable_folder(path: str | Path, what: str) -> Path:
    """Create ``path`` if missing (logged) and check that files can be created in it.

    Args:
        path: the folder.
        what: how messages name it (e.g. ``"outputs folder"``).

    Raises:
        OutputError: naming ``what``, the folder and the reason.
    """
    path = make_folder(path, what)
    if not os.access(path, os.W_OK | os.X_OK):
        raise OutputError(f"{what} {path} is not writable (permission denied or a read-only file system)")
    return path


def make_folder(path: str | Path, what: str) -> Path:
    """Create ``path`` and its parents if missing (logged).

    Raises:
        OutputError: naming ``what``, the folder and the reason (e.g. a file in the way).
    """
    path = Path(path)
    if not path.is_dir():
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise OutputError(f"cannot create {what} {path}: {os_reason(err)}") from None
        log.info("created %s %s", what, path)
    return path


def atomic_write(path: str | Path, write: Callable[[BinaryIO], None], what: str = "file") -> Path:
    """Write ``path`` whole or not at all; missing folders are created.

    Args:
        path: the file to create or replace.
        write: fills the open binary file it is given.
        what: how messages name the file (e.g. ``"checkpoint"``).

    Returns:
        ``path``.

    Raises:
        OutputError: if the folder or the file cannot be written (full disk, no permission, ...);
            ``path`` is then unchanged and no temporary file remains. Other errors of ``write``
            propagate, also without leaving a file behind; a ``KeyboardInterrupt`` (Ctrl-C, a signal's
            :class:`defense.interrupt.Interrupted`) during torch's write propagates as itself, not as the
            ``RuntimeError`` torch wraps it in.
    """
    path = Path(path)
    make_folder(path.parent, "folder")
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as err:
        raise OutputError(f"cannot write {what} {path}: {os_reason(err)}") from None
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o644)  # mkstemp's 0600 would hide results from the rest of a research group
        os.replace(tmp, path)
    except BaseException as err:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(err.__context__, KeyboardInterrupt) and not isinstance(err, KeyboardInterrupt):
            raise err.__context__ from None  # Ctrl-C or a signal during torch's write: an interruption, not an error
        reason = os_reason(err)
        if reason is None or isinstance(err, OutputError):
            raise
        raise OutputError(f"cannot write {what} {path}: {reason}") from err
    return path


def check_output_file(path: str | Path, what: str, reads: Mapping[str, str | Path] = MappingProxyType({})) -> Path:
    """Refuse, before any work, an output file path that would destroy something: an existing folder or other
    non-regular file, or a file the command reads (the same file by inode, so also through a symbolic or hard
    link or a linked folder). Its folder is :func:`writable_folder`'s to check.

    Args:
        path: the file the command will write.
        what: how messages name it (e.g. ``"--output"``).
        reads: the files the command reads, by how messages name them (e.g. ``{"--input": path}``).

    Raises:
        OutputError: one line naming ``what``, the path and the reason.
    """
    path = Path(path)
    if path.is_dir():
        raise OutputError(f"{what} {path} is a folder: give a file name in it, e.g. {path / 'adversarial.wav'}")
    if path.exists() and not path.is_file():
        raise OutputError(f"{what} {path} exists and is not a regular file (a FIFO, socket or device)")
    for name, source in reads.items():
        if same_file(path, source):
            raise OutputError(f"{what} {path} is the same file as {name} {source}: it would be overwritten; "
                              "choose another output name")
    return path


def same_file(a: str | Path, b: str | Path) -> bool:
    """Whether ``a`` and ``b`` both exist and are one file (device and inode: links and linked folders count)."""
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False
