"""Runs last (files run in name order): no secret the suite used appears in Dagster's event logs or the output."""

from __future__ import annotations

from pathlib import Path

import pytest

from ajo_exports_tests.leaks import CAPTURED, SECRETS


def dagster_files(base: Path) -> list[Path]:
    """Every file of every on-disk Dagster instance the suite used (event logs, run storage, compute logs)."""
    return [p for p in base.rglob("*") if p.is_file() and any(part.startswith("dagster") for part in p.parts)]


def test_no_secret_in_event_logs_or_captured_output(request: pytest.FixtureRequest) -> None:
    destination_tests = [item for item in request.session.items if "test_destination_" in item.nodeid]
    if destination_tests:
        assert len(SECRETS) >= 3, "the destination fixtures register the secrets they create"
    base = request.config._tmp_path_factory.getbasetemp()  # noqa: SLF001 - the session's temp root
    files = dagster_files(base)
    if destination_tests:
        assert files, "destination tests record their runs in on-disk Dagster instances"
    leaks = []
    for path in files:
        data = path.read_bytes()
        leaks += [f"{path}" for secret in SECRETS if secret.encode() in data]
    for nodeid, text in CAPTURED:
        leaks += [f"output of {nodeid}" for secret in SECRETS if secret in text]
    print(f"searched {len(files)} Dagster files and {len(CAPTURED)} outputs for {len(SECRETS)} secrets")
    assert not leaks, "secrets found in: " + ", ".join(sorted(set(leaks)))
