"""The MLflow UI a researcher opens (issue 10 item 3): `advaudio ui` prints the address of a view whose
runs table shows every trained model's ε_r and fooling AUC; headless Chromium renders it, and the page
holds the store's values. The screenshot is kept under ``test-artifacts/``."""
from __future__ import annotations

import math
import re
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import mlflow
import pytest

from defense.attack_cell import VERDICT_VALUE
from defense.grid import load_grid
from defense.runner import run_grid
from eps_r_check import LEARNS, check_logged_eps_r, same
from evaluation import stats
from evaluation.tracking import iter_runs
from conftest import needs
from mlflow_server import free_port
from tiny_configs import TWO_TABLE_ATTACKS

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"
pytestmark = [pytest.mark.slow, needs("Debian's chromium (.ci/run installs it)", CHROMIUM is not None)]


def _chromium(url: str, *extra: str) -> str:
    cmd = [str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
           "--window-size=1400,900", "--virtual-time-budget=30000", *extra, url]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=180).stdout


@pytest.mark.timeout(900)
def test_advaudio_ui_opens_the_runs_table_with_eps_r_columns(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ADVAUDIO_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    grid_file = tmp_path / "tiny.yaml"
    grid_file.write_text(TWO_TABLE_ATTACKS)
    outputs = tmp_path / "out"
    grid = load_grid(grid_file, LEARNS)
    run_grid(grid, outputs=outputs)
    store = f"sqlite:///{(outputs / 'mlflow.db').resolve()}"
    exp_id = mlflow.MlflowClient(store).get_experiment_by_name("tiny").experiment_id
    mlflow.set_tracking_uri(store)
    runs = list(iter_runs(exp_id))
    trains = [r for r in runs if r.data.tags.get("advaudio.kind") == "train"]
    # the values the UI must show = a recomputation from the per-clip records (nan exactly where that is nan)
    expected = check_logged_eps_r([r for r in runs if r.data.tags.get("advaudio.kind") == "attack"], trains,
                                  grid.evaluation)
    defended = next(r for r in trains if r.data.tags["advaudio.defense"] == "fgsm_mix")
    worst = next(e for run_id, e in expected.items() if any(
        r.info.run_id == run_id and r.data.tags["advaudio.attack"] == "ensemble_l2" for r in runs))
    assert math.isfinite(worst["eps_r"]), worst
    headline = ("eps_r.ensemble_l2", "eps_r_ci_low.ensemble_l2", "eps_r_ci_high.ensemble_l2", "verdict.ensemble_l2")
    values = {k: defended.data.metrics[k] for k in headline}
    # a verdict where the smaller base set holds N_MIN clips; below, undetermined (nan), with its n logged beside
    verdict = VERDICT_VALUE[stats.verdict(worst["eps_r_ci_low"], worst["eps_r_ci_high"], worst["eps_r_n"])]
    assert same(values["verdict.ensemble_l2"], verdict)
    assert math.isnan(verdict) == (worst["eps_r_n"] < stats.N_MIN)
    finite = {k: v for k, v in values.items() if math.isfinite(v)}

    port = free_port()
    ui = subprocess.Popen([sys.executable, "-m", "defense.cli", "ui", "--outputs", str(outputs), "--port", str(port)],
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        first = ui.stdout.readline()  # "tiny: http://127.0.0.1:PORT/#/experiments/N/runs?viewStateShareKey=advaudio"
        assert first.startswith("tiny: http://127.0.0.1:"), first
        url = first.split(": ", 1)[1].strip()
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2):
                    break
            except OSError:
                time.sleep(0.5)
        dom = _chromium(url, "--dump-dom")
        ARTIFACTS.mkdir(exist_ok=True)
        (ARTIFACTS / "mlflow_ui_runs_view.html").write_text(dom)
        _chromium(url, f"--screenshot={ARTIFACTS / 'mlflow_ui_runs_view.png'}")
    finally:
        import os
        import signal

        os.killpg(ui.pid, signal.SIGKILL)
        ui.wait(timeout=60)  # a killed group is reaped at once; never hang on it
    # in a 1,400-pixel window, without scrolling: which model each row is, and the worst case's eps_r, its interval
    # and verdict (the grid virtualises its columns: off-screen ones are not in the page)
    assert "eps_r.ensemble_l2" in dom  # the worst case's eps_r is the first metric column, on screen
    assert "resnet56/fgsm_mix" in dom and "resnet56/clean" in dom
    shown = [float(x) for x in re.findall(r">(-?\d+(?:\.\d+)?)<", dom)]
    if len(finite) < len(values):
        assert ">NaN<" in dom  # an undetermined interval or verdict is shown as such, not hidden
    for key, value in finite.items():  # the UI rounds to 4 decimals at most
        assert any(abs(v - value) <= 5e-4 * max(1.0, abs(value)) for v in shown), (key, value, shown[:20])
