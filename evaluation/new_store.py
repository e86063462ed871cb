"""A new SQLite store started from an empty one of the same MLflow version instead of from nothing.

MLflow makes a store's schema by creating its first tables and replaying every alembic migration since (about 80
in MLflow 3): 0.6-0.8 s of CPU per new store in a process that has MLflow loaded, measured 2026-12-04 on a 2-core
CPU. A dry run makes a store per model column, and a run of the test suite makes 76. The first store of an MLflow
version is made that way once, without MLflow's Default experiment, into the data cache (``$ADVAUDIO_CACHE``,
else ``~/.cache/advaudio``); each new store then starts as a copy of it. MLflow opens the copy as it opens a store
it has just made: it checks the schema's version and adds its Default experiment.
"""
from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path

import mlflow
from sqlalchemy import create_engine

from training.data.cache import default_cache_dir
from training.files import atomic_write

log = logging.getLogger(__name__)


def start_store(db: Path) -> None:
    """Create the SQLite database ``db`` as a copy of :func:`template` if it does not exist yet; where no template
    can be made (a read-only cache), leave ``db`` to MLflow, which makes it from nothing."""
    if db.exists():
        return
    made = template()
    if made is not None:
        content = made.read_bytes()
        atomic_write(db, lambda handle: handle.write(content), "MLflow store")


def template() -> Path | None:
    """An empty store of this MLflow version (no experiment) in the data cache, made if missing; ``None`` if it
    cannot be made there. Processes making it at once each write their own file and rename it into place."""
    path = default_cache_dir() / f"mlflow-{mlflow.__version__}-store.db"
    if path.is_file():
        return path
    tmp = None
    try:
        from mlflow.store.db.utils import _initialize_tables  # MLflow's own schema creation, as a new store runs it

        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
        engine = create_engine(f"sqlite:///{tmp}")
        try:
            _initialize_tables(engine)
        finally:
            engine.dispose()
        os.chmod(tmp, 0o644)  # as the data cache's other files (mkstemp makes it 0600)
        os.replace(tmp, path)
    except Exception as err:  # a read-only cache, or an MLflow that builds stores otherwise: MLflow makes each store
        log.debug("no MLflow store template in %s: %s", path.parent, err)
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        return None
    return path
