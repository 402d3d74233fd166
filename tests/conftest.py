"""Shared fixtures: ``shared_data`` = the read-only ../shared/data folder (benchmarks, weights)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest


def shared_data_path() -> Path:
    """``$SRQ_SHARED_DATA`` if set, else ``<repo>/../shared/data``."""
    env = os.environ.get("SRQ_SHARED_DATA")
    return Path(env) if env else Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The shared data folder; skips the test with the reason when it is absent."""
    path = shared_data_path()
    if not path.is_dir():
        pytest.skip(f"shared data not found at {path} (set SRQ_SHARED_DATA)")
    return path
