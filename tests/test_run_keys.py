"""Run keys follow what a run was made from: a model trained or attacked through a channel option (``channel: room``,
``evaluation.over_the_air: room``) is found again only while ``configs/channel/room.yaml`` says the same; configs
without a channel keep the keys they always had (a store resumes)."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from defense.channel import channel_identity
from defense.config import CONFIG_ROOT
from defense.pipeline import run_key
from evaluation.tracking import stable_key

ROOM_MODEL = {"dataset": {"name": "fsdd"}, "frontend": {"name": "stft_db_128"}, "victim": {"backbone": "tiny"},
              "train": {"epochs": 1}, "defense": {"name": "room_augment", "channel": "room"}}
PROBE = ("import json, sys; from defense.pipeline import run_key; from defense.channel import channel_identity; "
         "cfg = json.loads(sys.argv[1]); print(run_key(cfg)); print(json.dumps(channel_identity("
         "{'over_the_air': 'room'})))")


def _in_configs(root: Path) -> list[str]:
    """Run key of :data:`ROOM_MODEL` and the identity of ``over_the_air: room`` with ``root`` as the configs."""
    env = {**os.environ, "ADVAUDIO_CONFIGS": str(root)}
    done = subprocess.run([sys.executable, "-c", PROBE, json.dumps(ROOM_MODEL)], env=env, capture_output=True,
                          text=True, timeout=120, check=True)
    return done.stdout.split("\n")[:2]


@pytest.mark.slow  # two processes that import torch
@pytest.mark.timeout(300)
def test_a_channel_option_enters_keys_by_its_content(tmp_path: Path) -> None:
    same, edited = tmp_path / "same", tmp_path / "edited"
    for root in (same, edited):
        shutil.copytree(CONFIG_ROOT, root, ignore=shutil.ignore_patterns("__pycache__", "*.py"))
    room = yaml.safe_load((edited / "channel" / "room.yaml").read_text())
    (edited / "channel" / "room.yaml").write_text(yaml.safe_dump({**room, "snr_db": room["snr_db"] - 10.0}))

    here = [run_key(ROOM_MODEL), json.dumps(channel_identity({"over_the_air": "room"}))]
    assert _in_configs(same) == here
    moved = _in_configs(edited)
    assert moved[0] != here[0]  # another room: another model
    assert moved[1] != here[1] and json.loads(moved[1])["over_the_air"]["snr_db"] == room["snr_db"] - 10.0


@pytest.mark.timeout(60)
def test_keys_without_a_channel_are_unchanged() -> None:
    cfg = {**ROOM_MODEL, "defense": {"name": "fgsm_mix", "eps": 0.1, "steps": (1, 2)}}
    assert run_key(cfg) == stable_key(cfg)
    assert channel_identity([{"a": ["room"]}, "room", 3]) == [{"a": ["room"]}, "room", 3]
    assert channel_identity({"channel": {"rooms": 2}}) == {"channel": {"rooms": 2}}  # a mapping is its own content
