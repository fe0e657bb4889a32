"""gcp-storage-emulator, a Google Cloud Storage JSON API server, as a real process on 127.0.0.1.

It serves the JSON API only (the HMAC/XML path is tested against moto's S3 server) and checks no credentials,
so clients use the destination's `{"type": "emulator"}` key. Install: `pip install gcp-storage-emulator` (in the
project's dev dependencies), which provides the `gcp-storage-emulator` script next to the Python interpreter.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
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

EMULATOR = Path(sys.executable).parent / "gcp-storage-emulator"
EMULATOR_KEY = '{"type": "emulator"}'
ATTEMPT_SECONDS = 20.0


@dataclass
class GcsEmulator:
    """One emulator process: its endpoint, and stop/start on the same port.

    In memory by default; with `on_disk` it keeps objects under `location`, so a restarted server still holds
    what was finalized before it stopped."""

    location: Path
    on_disk: bool = False
    port: int = field(default_factory=free_port)
    process: subprocess.Popen | None = None

    @property
    def endpoint_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.location / "gcs-emulator.log"

    def start(self) -> GcsEmulator:
        if not EMULATOR.exists():
            pytest.fail(f"{EMULATOR} is missing: install it with `pip install gcp-storage-emulator`")
        self.location.mkdir(parents=True, exist_ok=True)
        command = [str(EMULATOR), "start", "--host", "127.0.0.1", "--port", str(self.port)]
        if not self.on_disk:
            command.append("--in-memory")
        env = {**os.environ, "STORAGE_BASE": str(self.location)}
        deadline = time.monotonic() + 90  # a loaded 2-core CI machine starts it slowly
        while True:
            with self.log_path.open("ab") as log:
                self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env,
                                                cwd=self.location)
            if self._answers(until=min(deadline, time.monotonic() + ATTEMPT_SECONDS)):
                return self
            # It exited (the port still held after a restart), or it lives without answering: the emulator binds
            # in a thread, and a failed bind ends only that thread. Either way, start it again until the deadline.
            self.stop()
            if time.monotonic() > deadline:
                tail = self.log_path.read_text(errors="replace")[-2000:]
                pytest.fail(f"gcp-storage-emulator did not start on port {self.port} in 90 s; its log ends:\n{tail}")
            time.sleep(0.5)

    def _answers(self, until: float) -> bool:
        while self.process is not None and self.process.poll() is None and time.monotonic() < until:
            try:
                requests.get(f"{self.endpoint_url}/storage/v1/b", timeout=1)
                return True
            except requests.RequestException:
                time.sleep(0.1)
        return False

    def stop(self) -> None:
        """Kill the server at once, as a crash would end it for its clients."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(10)
        self.process = None

    def client(self) -> storage.Client:
        """The vendor SDK, pointed at the emulator, to set up and inspect what a test delivered."""
        return storage.Client(project="ajo-test", credentials=AnonymousCredentials(),
                              client_options={"api_endpoint": self.endpoint_url})

    def create_bucket(self, name: str | None = None) -> str:
        """A new bucket (a fresh name per test unless given)."""
        name = name or f"ajo-{uuid.uuid4().hex[:20]}"
        self.client().create_bucket(name)
        return name

    def keys(self, bucket: str, prefix: str = "") -> list[str]:
        """Every object name under `prefix`, listed with the vendor SDK."""
        return sorted(blob.name for blob in self.client().list_blobs(bucket, prefix=prefix))


@pytest.fixture(scope="session")
def gcs_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GcsEmulator]:
    """One in-memory emulator for the session; tests use their own buckets."""
    server = GcsEmulator(tmp_path_factory.mktemp("gcs")).start()
    yield server
    server.stop()


@pytest.fixture
def fresh_gcs_server(tmp_path: Path) -> Iterator[GcsEmulator]:
    """An emulator of the test's own that keeps objects on disk, which the test may stop and start."""
    server = GcsEmulator(tmp_path / "gcs", on_disk=True).start()
    yield server
    server.stop()
