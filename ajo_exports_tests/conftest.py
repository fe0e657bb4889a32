"""Test set-up: nothing leaves 127.0.0.1, and every destination server is a real process started here."""

from __future__ import annotations

import os

import pytest

# Before any SDK is imported: no SDK may ask a cloud metadata address, no Dagster telemetry.
os.environ["AWS_EC2_METADATA_DISABLED"] = "true"
os.environ["NO_GCE_CHECK"] = "true"
os.environ["DAGSTER_DISABLE_TELEMETRY"] = "1"
for proxy in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"):
    os.environ.pop(proxy, None)
os.environ["NO_PROXY"] = os.environ["no_proxy"] = "127.0.0.1,localhost"

pytest_plugins = [
    "ajo_exports_tests.servers.s3",
    "ajo_exports_tests.servers.gcs",
    "ajo_exports_tests.servers.fake_gcs",
    "ajo_exports_tests.servers.azurite",
    "ajo_exports_tests.servers.sshd",
    "ajo_exports_tests.servers.dagster_web",
    "ajo_exports_tests.fixtures",
    "ajo_exports_tests.pgp",
]


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    """In CI a skipped test is a failed test: a missing server or tool must never pass quietly."""
    outcome = yield
    report = outcome.get_result()
    if os.environ.get("CI") and report.skipped and not hasattr(report, "wasxfail"):
        report.outcome = "failed"
        report.longrepr = f"skipped in CI, which counts as a failure: {report.longrepr}"


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    """Keep what each test printed and its failure text: test_zz_no_secret_leaks searches them."""
    from ajo_exports_tests.leaks import CAPTURED

    text = "\n".join(part for part in (report.capstdout, report.capstderr, report.caplog) if part)
    if report.longrepr is not None:
        text += "\n" + str(report.longrepr)
    if text.strip():
        CAPTURED.append((report.nodeid, text))


@pytest.fixture(scope="session", autouse=True)
def dagster_instances_on_disk(tmp_path_factory: pytest.TempPathFactory):
    """Runs without an explicit instance still record their event log on disk, where the leak test reads it."""
    folder = tmp_path_factory.mktemp("dagster-instances")
    os.environ["AJO_TEST_INSTANCES"] = str(folder)
    yield folder


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Write and print the robustness figures the tests recorded (ajo_exports_tests.figures)."""
    from ajo_exports_tests import figures

    path = figures.write()
    if path is not None:
        print(f"\nrobustness figures ({path}):\n{figures.table()}")
