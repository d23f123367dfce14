"""Fixtures shared by every package's tests: where the read-only upstream data lives."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent
SHARED = ROOT.parent / "shared"


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    if not SHARED.is_dir():
        pytest.skip(f"{SHARED} is absent: upstream reference data is only in the project's workspace")
    return SHARED


@pytest.fixture(scope="session")
def upstream_dir(shared_dir: Path) -> Path:
    return shared_dir / "upstream"
