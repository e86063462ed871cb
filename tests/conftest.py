"""Shared fixtures: tiny victims, short audio, and a temporary MLflow store."""
from __future__ import annotations

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


@pytest.fixture
def fsdd_root() -> Path:
    if not (FSDD_ROOT / "recordings").is_dir():
        pytest.skip(f"FSDD not found at {FSDD_ROOT}")
    return FSDD_ROOT
