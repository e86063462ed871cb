"""A new SQLite store starts as a copy of an empty store of the same MLflow version (:mod:`evaluation.new_store`):
MLflow's migrations run once per cache, each copy holds MLflow's schema, and MLflow opens it as a store of its own."""
from __future__ import annotations

import sqlite3
from pathlib import Path

import mlflow
import mlflow.store.db.utils as db_utils
import pytest
from mlflow.tracking import MlflowClient

from evaluation.tracking import setup_tracking


def _schema(db: Path) -> list[tuple[str, str]]:
    with sqlite3.connect(db) as con:
        return sorted(con.execute("SELECT name, sql FROM sqlite_master WHERE name NOT LIKE 'sqlite_%'").fetchall())


def _migrations(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The databases MLflow's schema creation runs on from here on."""
    calls: list[str] = []
    real = db_utils._initialize_tables
    monkeypatch.setattr(db_utils, "_initialize_tables",
                        lambda engine: calls.append(str(engine.url.database)) or real(engine))
    return calls


@pytest.mark.timeout(120)
def test_a_second_store_is_a_copy_that_mlflow_opens_as_its_own(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ADVAUDIO_CACHE", str(tmp_path / "cache"))
    calls = _migrations(monkeypatch)
    setup_tracking("first", outputs=tmp_path / "one")
    template = next((tmp_path / "cache").glob("mlflow-*-store.db"))
    assert len(calls) == 1 and calls[0] != str(tmp_path / "one" / "mlflow.db")  # made into the cache, once
    setup_tracking("second", outputs=tmp_path / "two")
    assert len(calls) == 1  # the second store ran no migration
    one, two = tmp_path / "one" / "mlflow.db", tmp_path / "two" / "mlflow.db"
    assert _schema(two) == _schema(one) == _schema(template)
    client = MlflowClient(f"sqlite:///{two}")
    assert sorted(e.name for e in client.search_experiments()) == ["Default", "second"]  # MLflow's own Default
    with mlflow.start_run() as run:
        mlflow.log_metric("eps_r", 2.5)
    assert client.get_run(run.info.run_id).data.metrics == {"eps_r": 2.5}
    with sqlite3.connect(template) as con:  # the template stays empty
        assert con.execute("SELECT COUNT(*) FROM experiments").fetchone() == (0,)


@pytest.mark.timeout(120)
def test_without_a_writable_cache_mlflow_makes_the_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    blocked = tmp_path / "cache"
    blocked.write_text("a file where the cache folder would be")
    monkeypatch.setenv("ADVAUDIO_CACHE", str(blocked))
    calls = _migrations(monkeypatch)
    setup_tracking("alone", outputs=tmp_path / "out")
    assert calls == [str((tmp_path / "out" / "mlflow.db").resolve())]
    with mlflow.start_run() as run:
        mlflow.log_metric("eps_r", 1.5)
    assert MlflowClient().get_run(run.info.run_id).data.metrics == {"eps_r": 1.5}
