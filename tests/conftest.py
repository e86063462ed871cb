"""Shared fixtures: tiny victims, short audio, and a temporary MLflow store."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
FSDD_ROOT = REPO.parent / "shared" / "data" / "fsdd"

torch.set_num_threads(1)  # tiny models gain nothing from threads; with `-n 2` workers this avoids oversubscription


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
