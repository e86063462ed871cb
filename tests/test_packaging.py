"""The built wheel is a complete install: packages and every YAML option (issue 10 item 7)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_a_wheel_install_has_the_configs(tmp_path: Path) -> None:
    subprocess.run([sys.executable, "-m", "pip", "wheel", str(REPO), "--no-deps", "--no-build-isolation", "-q",
                    "-w", str(tmp_path / "dist")], check=True, cwd=tmp_path, timeout=300)
    wheel = next((tmp_path / "dist").glob("advaudio-*.whl"))
    site = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(site), str(wheel)],
                   check=True, cwd=tmp_path, timeout=300)
    probe = ("from defense.config import CONFIG_ROOT, compose, options; import defense; "
             "print(defense.__file__); print(CONFIG_ROOT); "
             "print(sum(len(options(g)) for g in ('attack', 'channel', 'dataset', 'defense', 'experiment', 'frontend', "
             "'threat_model', 'train', 'victim'))); print(compose('train')['victim']['backbone']); "
             "from leaderboard.entry import validator; print(validator().schema['title'])")
    env = {k: v for k, v in os.environ.items() if k != "ADVAUDIO_CONFIGS"} | {"PYTHONPATH": str(site)}
    out = subprocess.run([sys.executable, "-c", probe], check=True, cwd=tmp_path, env=env, capture_output=True,
                         text=True, timeout=300).stdout.split("\n")
    assert out[0].startswith(str(site)) and out[1].startswith(str(site / "advaudio_configs"))
    assert int(out[2]) == len(list((REPO / "configs").glob("*/*.yaml")))
    assert out[3] == "resnet18"
    assert out[4].startswith("advaudio leaderboard entry")  # the entry schema ships in the wheel
