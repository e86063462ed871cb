"""A real MLflow tracking server (issue 10 item 1): the same run tree as the default store, a server killed
mid-grid (one line naming it, then a resume with no run duplicated or lost), concurrent Ray writers."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

import mlflow
import pytest
from mlflow.tracking import MlflowClient

from defense import column
from defense.cli import main
from mlflow_server import MlflowServer
from tiny_configs import TINY_FGSM

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MlflowServer]:
    srv = MlflowServer(tmp_path_factory.mktemp("server"))
    srv.start()
    yield srv
    srv.kill()


@pytest.fixture
def grid_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("ADVAUDIO_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    path = tmp_path / "tiny.yaml"
    path.write_text(TINY_FGSM)
    return path


def _tree(uri: str) -> dict[tuple[str, ...], dict[str, Any]]:
    """Each run of experiment 'tiny' by coordinates: its metric names and artifact paths."""
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("tiny")
    out = {}
    for run in client.search_runs([exp.experiment_id], max_results=1000):
        t = run.data.tags
        key = tuple(t.get(f"advaudio.{k}", "") for k in ("kind", "defense", "attack"))
        assert key not in out, f"duplicate run {key}"
        arts = {a.path for a in client.list_artifacts(run.info.run_id)}
        out[key] = {"metrics": set(run.data.metrics), "artifacts": arts, "status": t.get("advaudio.status")}
    return out


def test_grid_on_a_server_matches_the_default_store_and_survives_a_server_crash(
        server: MlflowServer, grid_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    local = tmp_path / "local"
    assert main(["experiment", str(grid_file), "--outputs", str(local), "--no-progress"]) == 0
    expected = _tree(f"sqlite:///{(local / 'mlflow.db').resolve()}")

    calls = {"n": 0}
    evaluate = column.evaluate_cell

    def crash_after_first(*args: Any, **kwargs: Any) -> Any:
        out = evaluate(*args, **kwargs)
        calls["n"] += 1
        if calls["n"] == 1:
            server.kill()  # the server dies after the first attack run is logged
        return out

    monkeypatch.setattr(column, "evaluate_cell", crash_after_first)
    remote = tmp_path / "remote"
    capsys.readouterr()
    assert main(["experiment", str(grid_file), "--outputs", str(remote), "--tracking-uri", server.uri,
                 "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert f"MLflow server at {server.uri} is not reachable" in err and err.count("\n") == 1, err

    server.start()
    first = _tree(server.uri)
    assert first[("attack", "none", "fgsm")]["status"] == "finished"
    monkeypatch.setattr(column, "evaluate_cell", evaluate)
    assert main(["experiment", str(grid_file), "--outputs", str(remote), "--tracking-uri", server.uri,
                 "--no-progress"]) == 0
    resumed = _tree(server.uri)  # _tree asserts no coordinate has two runs
    assert set(resumed) == set(expected)
    for key, run in expected.items():
        assert resumed[key]["metrics"] == run["metrics"], key
        assert resumed[key]["artifacts"] == run["artifacts"], key
    client = MlflowClient(server.uri)
    kept = client.search_runs([client.get_experiment_by_name("tiny").experiment_id],
                              "tags.`advaudio.kind` = 'attack' and tags.`advaudio.defense` = 'none'")
    assert len(kept) == 1  # the run logged before the crash was reused, not logged again


def test_concurrent_ray_writers_lose_no_metric(server: MlflowServer) -> None:
    import ray

    def log_many(uri: str, run_id: str, writer: int, n: int) -> int:  # defined here: Ray ships it by value
        client = MlflowClient(uri)
        for step in range(n):
            client.log_metric(run_id, f"writer{writer}", float(step), step=step)
        return writer

    mlflow.set_tracking_uri(server.uri)
    exp = mlflow.create_experiment("writers")
    run_id = MlflowClient(server.uri).create_run(exp).info.run_id
    ray.init(address="local", num_cpus=4, include_dashboard=False, log_to_driver=False)
    try:
        task = ray.remote(log_many)
        done = ray.get([task.remote(server.uri, run_id, w, 40) for w in range(4)])
    finally:
        ray.shutdown()
    assert sorted(done) == [0, 1, 2, 3]
    client = MlflowClient(server.uri)
    for w in range(4):
        history = client.get_metric_history(run_id, f"writer{w}")
        assert sorted(m.step for m in history) == list(range(40))


def test_an_artifact_is_read_in_place_from_a_local_store_and_through_a_removed_copy_from_a_server(
        server: MlflowServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``evaluation.tracking.downloaded``: the default store's file itself (no copy of a model's weights), and from
    a server a copy in a temporary folder that is gone after the block."""
    import tempfile

    from evaluation.tracking import downloaded, setup_tracking

    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    source = tmp_path / "weights.bin"
    source.write_bytes(bytes(range(256)) * 64)
    stores = {"local": setup_tracking("reads", None, tmp_path / "outputs"), "server": None}
    mlflow.set_tracking_uri(server.uri)
    stores["server"] = mlflow.create_experiment("reads")
    for where, uri in (("local", f"sqlite:///{(tmp_path / 'outputs' / 'mlflow.db').resolve()}"),
                       ("server", server.uri)):
        client = MlflowClient(uri)
        run_id = client.create_run(stores[where]).info.run_id
        client.log_artifact(run_id, str(source), "model")
        with downloaded(run_id, "model/weights.bin", client) as path:
            assert path.read_bytes() == source.read_bytes()
            if where == "local":
                assert path.is_relative_to((tmp_path / "outputs" / "mlartifacts").resolve()), path
            else:
                assert path.is_relative_to(scratch), path
        assert path.exists() == (where == "local")  # the server's copy is removed with its folder
    assert not any(p for p in scratch.iterdir() if not p.name.startswith("db_init_lock")), list(scratch.iterdir())
