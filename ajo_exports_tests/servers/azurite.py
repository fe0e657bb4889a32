"""Azurite, Microsoft's Blob storage emulator, as a real process on 127.0.0.1 for the Azure destination tests.

Azure Blob, ADLS Gen2 (through its Blob endpoint) and the Data Landing Zone all talk to it. Install it with
`npm install --no-audit --no-fund` at the repository root (package.json pins azurite).
"""

from __future__ import annotations

import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import parse_qs

import pytest
from azure.core.exceptions import AzureError
from azure.storage.blob import BlobServiceClient, ContainerClient, ContainerSasPermissions, generate_container_sas

from ajo_exports_tests.leaks import register_secret
from ajo_exports_tests.servers import free_port

ROOT = Path(__file__).resolve().parents[2]
AZURITE_BLOB = ROOT / "node_modules" / ".bin" / "azurite-blob"
# The well-known development account every Azure emulator uses (public, documented by Microsoft).
ACCOUNT = "devstoreaccount1"
ACCOUNT_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
register_secret(ACCOUNT_KEY)  # public (Azurite's well-known key), but it stands for a real account key here


@dataclass
class Azurite:
    """One Azurite blob server: its endpoint and credentials, and stop/start on the same port and data folder."""

    location: Path
    port: int = field(default_factory=free_port)
    process: subprocess.Popen | None = None
    account: str = ACCOUNT
    account_key: str = ACCOUNT_KEY

    @property
    def blob_endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}/{self.account}"

    @property
    def log_path(self) -> Path:
        return self.location / "azurite.log"

    def connection_string(self, account_key: str | None = None) -> str:
        return (
            f"DefaultEndpointsProtocol=http;AccountName={self.account};"
            f"AccountKey={account_key or self.account_key};BlobEndpoint={self.blob_endpoint};"
        )

    def service(self) -> BlobServiceClient:
        """An SDK client with the shared key, for setting up and inspecting what a test delivered."""
        return BlobServiceClient.from_connection_string(self.connection_string())

    def create_container(self, name: str | None = None) -> ContainerClient:
        """A new container (a fresh name per test unless given) through the vendor SDK."""
        container = self.service().get_container_client(name or f"t-{uuid.uuid4().hex[:20]}")
        container.create_container()
        return container

    def container_sas_url(self, name: str, permission: str = "racwdl", expiry: timedelta = timedelta(hours=2)) -> str:
        """A container SAS URL, as AEP's DLZ credentials endpoint hands out (`SASUri`)."""
        token = generate_container_sas(
            self.account,
            name,
            account_key=self.account_key,
            permission=ContainerSasPermissions.from_string(permission),
            expiry=datetime.now(UTC) + expiry,
            start=datetime.now(UTC) - timedelta(minutes=5),
        )
        register_secret(parse_qs(token)["sig"][0])
        return f"{self.blob_endpoint}/{name}?{token}"

    def start(self, timeout: float = 60.0) -> None:
        if not AZURITE_BLOB.exists():
            pytest.fail(
                f"{AZURITE_BLOB} is missing: run `cd {ROOT} && npm install --no-audit --no-fund` (needs Node.js >= 18)",
                pytrace=False,
            )
        self.location.mkdir(parents=True, exist_ok=True)
        command = [
            str(AZURITE_BLOB), "--blobHost", "127.0.0.1", "--blobPort", str(self.port),
            "--location", str(self.location), "--skipApiVersionCheck", "--loose", "--disableTelemetry",
        ]
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, cwd=self.location)
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                pytest.fail(f"azurite exited with {self.process.returncode}; log: {self.log_path}", pytrace=False)
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    pass
                with self.service() as service:
                    service.get_service_properties(timeout=5)
                return
            except (OSError, AzureError):
                time.sleep(0.1)
        self.stop()
        pytest.fail(f"azurite did not answer on port {self.port} in {timeout}s; log: {self.log_path}", pytrace=False)

    def stop(self, kill: bool = False) -> None:
        """Stop the server (SIGTERM lets Azurite save its metadata; kill=True does not)."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None


@pytest.fixture(scope="session")
def azurite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Azurite]:
    """The session's Azurite: one server for every Azure test, each test in its own container."""
    server = Azurite(tmp_path_factory.mktemp("azurite"))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def azurite_private(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Azurite]:
    """A server of this test's own, for tests that stop it in the middle of an upload and start it again."""
    server = Azurite(tmp_path_factory.mktemp("azurite-private"))
    server.start()
    yield server
    server.stop()
