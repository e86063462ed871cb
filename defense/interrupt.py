"""Stopping on SIGINT (Ctrl-C) and SIGTERM (a scheduler, ``docker stop``, ``kill``).

Inside :func:`interruptible` either signal raises :class:`Interrupted` in the main thread. It unwinds like
Ctrl-C's ``KeyboardInterrupt`` (no ``except Exception`` swallows it, every ``finally`` runs: Ray is shut down,
temporary folders removed, a checkpoint being written is dropped by ``training.files.atomic_write`` and the
last epoch's stays), and the MLflow runs that were active when the signal came are marked ``KILLED`` — MLflow's
``with start_run()`` would mark them ``FAILED``, and a killed process leaves them ``RUNNING``. A rerun of the
same command resumes them (runs are found by their keys, whatever their status).
"""
from __future__ import annotations

import _thread
import signal
import sys
import threading
from contextlib import contextmanager
from types import FrameType
from typing import Any, Iterator

KILLED = "KILLED"
SIGNALS = (signal.SIGINT, signal.SIGTERM)
REDELIVER_S = 0.01
"""Delay before an interruption that a finalizer dropped is delivered again (:func:`interruptible`)."""


class Interrupted(KeyboardInterrupt):
    """A signal asked the process to stop.

    Attributes:
        signum: the signal (``signal.SIGINT`` or ``signal.SIGTERM``).
        run_ids: the MLflow runs active when it came, innermost first.
        unmarked: those that could not be marked ``KILLED`` (the store did not answer).
    """

    def __init__(self, signum: int, run_ids: list[str]) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum
        self.run_ids = run_ids
        self.unmarked: list[str] = []

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name

    @property
    def exit_code(self) -> int:
        """The shell's code for a process ended by the signal: 128 + its number (130 SIGINT, 143 SIGTERM)."""
        return 128 + self.signum


def active_run_ids() -> list[str]:
    """This thread's stack of active MLflow runs, innermost first (none if MLflow was never imported).

    MLflow has no public accessor for the whole stack (``mlflow.active_run`` is its top); the private one is
    read here only, and ``tests/test_signals.py`` checks it against ``mlflow.active_run``."""
    fluent = sys.modules.get("mlflow.tracking.fluent")
    if fluent is None:
        return []
    return [run.info.run_id for run in reversed(fluent._active_run_stack.get())]


def mark_killed(run_ids: list[str]) -> list[str]:
    """End the runs still active with status ``KILLED`` and set ``run_ids`` (already ended ``FAILED`` by their
    ``with`` blocks) to ``KILLED``; return those the store did not accept."""
    if not run_ids:
        return []
    import mlflow
    from mlflow.tracking import MlflowClient

    while mlflow.active_run() is not None:  # a run left on the stack would be ended FINISHED at exit
        try:
            mlflow.end_run(KILLED)  # pops the run first, then writes
        except Exception:  # the write is retried below, and reported there
            pass
    client = MlflowClient()
    unmarked = []
    for run_id in run_ids:
        try:
            client.set_terminated(run_id, KILLED)
        except Exception:  # the store went away: the run stays as it is, a rerun resumes it all the same
            unmarked.append(run_id)
    return unmarked


@contextmanager
def interruptible(signals: tuple[signal.Signals, ...] = SIGNALS) -> Iterator[None]:
    """Within the block, ``signals`` raise :class:`Interrupted`, and the MLflow runs active at the signal are
    marked ``KILLED`` before it propagates; the previous handlers are restored after. Outside the main thread
    (where Python cannot handle signals) the block runs unchanged.

    Args:
        signals: the signals to handle (a Ray task takes SIGINT only: Ray cancels a task with it, and stops
            its worker processes with SIGTERM).
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    fired: list[Interrupted] = []
    again: list[threading.Timer] = []

    def handle(signum: int, frame: FrameType | None) -> None:
        for sig in signals:  # one interruption: the cleanup it starts runs to its end
            signal.signal(sig, signal.SIG_IGN)
        if not fired:
            fired.append(Interrupted(signum, active_run_ids()))
        raise fired[0]

    def swallowed(unraisable: Any) -> None:
        """Python runs a signal's handler between any two bytecodes, also inside a ``__del__`` or a weakref
        callback, and drops what those raise: the interruption would be lost and its runs left RUNNING (seen:
        SQLAlchemy's class registry cleaning up while a Ray task was cancelled). It is delivered again from a timer
        thread (a signal marked pending here would be handled before this hook returns, still in the finalizer)."""
        if not fired or unraisable.exc_value is not fired[0]:
            hook(unraisable)
            return
        signal.signal(fired[0].signum, handle)
        timer = threading.Timer(REDELIVER_S, _redeliver, (fired[0].signum,))
        timer.daemon = True
        again.append(timer)
        timer.start()

    def _redeliver(signum: int) -> None:
        if signal.getsignal(signum) is handle:
            _thread.interrupt_main(signum)

    previous = {sig: signal.getsignal(sig) for sig in signals}
    hook, sys.unraisablehook = sys.unraisablehook, swallowed
    for sig in signals:
        signal.signal(sig, handle)
    try:
        yield
        if fired:  # dropped by a finalizer at the block's very end, before it came again
            raise fired[0]
    except BaseException as err:
        # Once a signal came, whatever leaves the block is its doing: Ray's blocking calls answer the handler's
        # exception with a KeyboardInterrupt of their own, and a C++ callback turns it into another error (torch's
        # checkpoint writer raises a RuntimeError whose context is the interruption). Without a signal, only a
        # KeyboardInterrupt is an interruption (taken for Ctrl-C); any other error is the block's own.
        if not fired and not isinstance(err, KeyboardInterrupt):
            raise
        for sig in signals:  # no second delivery during the cleanup
            signal.signal(sig, signal.SIG_IGN)
        interrupted = fired[0] if fired else Interrupted(signal.SIGINT, [])
        if interrupted.run_ids:
            from evaluation.tracking import release_interrupted_writes

            release_interrupted_writes(err, interrupted)
        interrupted.unmarked = mark_killed(interrupted.run_ids)
        if interrupted is err:
            raise
        raise interrupted from None
    finally:
        for timer in again:
            timer.cancel()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        sys.unraisablehook = hook


@contextmanager
def keep_handlers(signals: tuple[signal.Signals, ...] = SIGNALS) -> Iterator[None]:
    """Restore the handlers of ``signals`` after the block: ``ray.init`` replaces SIGTERM's with
    ``sys.exit(15)``, which would skip :func:`interruptible`'s marking and exit with 15 instead of 143."""
    previous = {sig: signal.getsignal(sig) for sig in signals}
    try:
        yield
    finally:
        if threading.current_thread() is threading.main_thread():
            for sig, handler in previous.items():
                signal.signal(sig, handler)
