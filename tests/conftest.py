"""Test-wide settings and fixtures: one torch thread in every test process, temporary files in RAM where there is
room (:func:`_temporary_files_in_ram`), seeded RNGs, an MLflow state isolated per test (no developer store),
CUDA-only tests skipped without a GPU, declared dependencies that must be present in CI (:func:`needs`), the FSDD
root, and a CLI command's temporary folder (``env``). Tiny victims and short audio live in ``tests/tiny.py``, the tiny
grids in ``tests/tiny_configs.py``."""
from __future__ import annotations

import ctypes
import gc
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
FSDD_ROOT = REPO.parent / "shared" / "data" / "fsdd"

os.environ.pop("MLFLOW_TRACKING_URI", None)  # read once at import (evaluation.tracking): tests never use a developer's store
torch.set_num_threads(1)  # tiny models gain nothing from threads; with several workers this avoids oversubscription
for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):  # and in every process a test starts (CLI commands, Ray, servers):
    os.environ[_var] = "1"  # a 2-thread torch beside a busy worker ran a ResNet-18 forward ~10x slower than 1 thread
M_MMAP_MAX = -4
"""glibc's ``mallopt`` parameter: how many blocks it may serve with ``mmap`` (0: none, all from the heap)."""


def _heap_only_malloc() -> None:
    """glibc serves each block above its mmap threshold (128 KB rising to 32 MB) with ``mmap`` and unmaps it on free,
    so every large tensor (a VGG-16 layer's 411 MB: its weights, gradients, Adam moments, copies) is faulted in page
    by page anew. Served from the heap, freed memory is reused: paper_004's dry run took 87.7 instead of 100.9 s, its
    kernel time 14.9 instead of 25.2 s (2026-12-05, 2-core CPU). In this process (``mallopt``) and in every process
    a test starts (glibc's ``MALLOC_MMAP_MAX_``); a no-op outside glibc."""
    os.environ.setdefault("MALLOC_MMAP_MAX_", "0")
    mallopt = getattr(ctypes.CDLL(None), "mallopt", None) if sys.platform.startswith("linux") else None
    if mallopt is not None:
        mallopt(M_MMAP_MAX, 0)


_heap_only_malloc()

RAM_FOLDER_MIN_FREE = 4 * 2**30
"""Free bytes ``/dev/shm`` needs for the session's temporary files: 3x the peak of a whole run (1.27 GB with both
workers, measured 2026-12-05), as passed tests' ``tmp_path`` folders are removed at once (``tmp_path_retention_policy
= "failed"`` in pyproject.toml)."""
RAM_MIN_AVAILABLE = 12 * 2**30
"""Memory the machine needs available (``MemAvailable``) for the RAM folder: the whole run used at most 9.4 GB with
it (``free``, sampled every 5 s, 2026-12-05). ``/dev/shm``'s size is a limit, not memory set aside."""


def _temporary_files_in_ram() -> Path | None:
    """Put the session's temporary files (every ``tmp_path``, and ``TMPDIR`` for every process a test starts: CLI
    commands, Ray's session folder, servers) in a new folder on ``/dev/shm``, Linux's RAM file system, where it and
    the machine have room and no ``TMPDIR`` is set. The suite writes and deletes GBs of checkpoints and stores: the
    whole run took 564.8 instead of 601-648 s with ``-n 2``, kernel time 120 instead of 150 CPU-s, I/O wait 0
    instead of 17 s (2026-12-05, 2-core CPU, ext4 mounted with ``discard``). Run by the main process only (xdist's
    workers inherit ``TMPDIR``); the folder is removed at the end unless a test failed
    (:func:`pytest_terminal_summary`)."""
    if "TMPDIR" in os.environ or not sys.platform.startswith("linux"):
        return None
    try:
        free = shutil.disk_usage("/dev/shm").free
        meminfo = dict(line.split(":", 1) for line in Path("/proc/meminfo").read_text().splitlines())
        available = int(meminfo["MemAvailable"].split()[0]) * 1024
    except (OSError, KeyError, ValueError):
        return None
    if free < RAM_FOLDER_MIN_FREE or available < RAM_MIN_AVAILABLE:
        return None
    folder = Path(tempfile.mkdtemp(prefix="advaudio-", dir="/dev/shm"))
    os.environ["TMPDIR"] = str(folder)
    tempfile.tempdir = None  # gettempdir() reads TMPDIR again
    return folder


RAM_FOLDER = _temporary_files_in_ram()


def pytest_collection_finish(session: pytest.Session) -> None:
    """Freeze what collection left alive (torch, MLflow, every test module: about a million objects) out of the
    garbage collector's way: each full collection walked them all again, 0.2-0.5 s apiece, and a worker of the fast
    subset ran 51 of them (23 s of its 87 s; an interruption's cleanup collects once,
    :func:`evaluation.tracking.release_interrupted_writes`). Frozen objects are never freed, so this runs once, after
    a collection, when nothing but module state is alive. The fast subset: 73.0 instead of 87.5 s with ``-n 2``
    (2026-12-05, 2-core CPU)."""
    gc.collect()
    gc.freeze()


@pytest.hookimpl(trylast=True)
def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None) -> None:
    """After a test module's last test (its module fixtures finalized), freeze what is still alive as well: the
    modules its tests imported on first use (matplotlib, SQLAlchemy's ORM, Ray, MLflow's server parts) would
    otherwise be walked by every later full collection. The suite's two workers ran 231 full collections, 38.7 CPU-s,
    with the freeze after collection alone (2026-12-05, 2-core CPU)."""
    if nextitem is None or getattr(nextitem, "module", None) is not getattr(item, "module", None):
        gc.collect()
        gc.freeze()


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter, exitstatus: int) -> None:
    """Remove the session's RAM folder, or name it when a test failed (its ``tmp_path`` is kept there)."""
    if RAM_FOLDER is None:
        return
    if terminalreporter.stats.get("failed") or terminalreporter.stats.get("error"):
        terminalreporter.write_line(f"temporary files of failed tests: {RAM_FOLDER} (in RAM; remove it when done)")
    else:
        shutil.rmtree(RAM_FOLDER, ignore_errors=True)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs CUDA")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _seed_and_threads() -> None:
    torch.manual_seed(0)


@pytest.fixture(autouse=True)
def _mlflow_state_isolated(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """MLflow keeps the active experiment, the active runs and the tracking URI in process globals, and
    ``set_experiment`` / ``set_tracking_uri`` export ``MLFLOW_EXPERIMENT_ID`` / ``MLFLOW_TRACKING_URI`` to every
    child process (a later test's CLI subprocess would write to an earlier test's store): each test starts with
    none of them set by an earlier test in the same worker, and leaves none behind."""
    for name in ("MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_ID", "MLFLOW_EXPERIMENT_NAME", "MLFLOW_RUN_ID"):
        monkeypatch.delenv(name, raising=False)  # restored (to unset) after the test, whatever it exported
    yield
    fluent = sys.modules.get("mlflow.tracking.fluent")
    if fluent is not None:
        while fluent.active_run() is not None:
            fluent.end_run()
        fluent._active_experiment_id = None  # no public reset; set_experiment's global
        sys.modules["mlflow"].set_tracking_uri(None)


IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
"""CI declares every dependency (.ci/run installs chromium; shared/ holds FSDD): there a missing one fails."""


def needs(what: str, present: bool) -> pytest.MarkDecorator:
    """Mark a test that needs ``what``: skipped where it is missing on a developer's machine, failed in CI,
    where .ci/run declares it (a skipped check there would pass unseen)."""
    return pytest.mark.needs(what=what, present=present)


def pytest_runtest_setup(item: pytest.Item) -> None:
    for mark in item.iter_markers("needs"):
        if not mark.kwargs["present"]:
            (pytest.fail if IN_CI else pytest.skip)(f"needs {mark.kwargs['what']}")


@pytest.fixture
def fsdd_root() -> Path:
    if not (FSDD_ROOT / "recordings").is_dir():
        (pytest.fail if IN_CI else pytest.skip)(f"FSDD not found at {FSDD_ROOT}")
    return FSDD_ROOT


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A temporary folder for a CLI command, with its data cache there and no tracking URI (outputs decide)."""
    monkeypatch.setenv("ADVAUDIO_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return tmp_path


@pytest.fixture(scope="session")
def clean_tables(tmp_path_factory: pytest.TempPathFactory, worker_id: str) -> str:
    """Tables I-III of one uninterrupted local run of ``tiny_configs.RESUMED`` (through the CLI, in its own process
    and store), the reference of every kill -9 and Ray-crash test: computed once per session, by the first xdist
    worker to ask (the others wait on its lock and read its file; pytest-xdist's documented pattern for a
    session fixture run once)."""
    from evaluation.locks import exclusive
    from grid_runs import clean_run_tables
    from tiny_configs import RESUMED

    if worker_id == "master":  # one process: nothing to share
        return clean_run_tables(RESUMED, tmp_path_factory.mktemp("clean"))
    shared = tmp_path_factory.getbasetemp().parent  # this session's folder, common to its workers
    done = shared / "clean_tables.txt"
    with exclusive(shared, "clean_tables", "the clean tiny run", timeout=900, quiet=True):
        if not done.exists():
            tables = clean_run_tables(RESUMED, shared / "clean")
            done.with_suffix(".part").write_text(tables)
            done.with_suffix(".part").replace(done)
    return done.read_text()
