"""Shared fixtures: a small seeded sample lake, and a Dagster instance on disk."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from dagster import DagsterInstance

from ajo_exports.lake import LocalLake
from ajo_exports.lake.generator import seed_lake

SEED_NOW = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)


@pytest.fixture(scope="session")
def lake_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A sample lake seeded once per session (read-only for tests: copy it before appending batches)."""
    root = tmp_path_factory.mktemp("home") / "lake"
    seed_lake(LocalLake(root), rows=200, batches=2, seed=7, now=SEED_NOW)
    return root


@pytest.fixture
def instance(tmp_path: Path):
    """A real on-disk (SQLite) Dagster instance, telemetry off, so checks can read materializations back."""
    (tmp_path / "dagster").mkdir()
    with DagsterInstance.local_temp(str(tmp_path / "dagster"), overrides={"telemetry": {"enabled": False}}) as inst:
        yield inst
