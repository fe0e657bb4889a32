"""moto's S3/IAM/STS server as a real process on 127.0.0.1 for the Amazon S3 (and GCS HMAC) destination tests.

The server starts with authentication off, the fixture provisions IAM users, a role and their policies, then
switches IAM authentication on (moto's `/moto-api/reset-auth`): from then on wrong keys, wrong secrets and missing
permissions are refused by the server itself, as AWS would. Install: `pip install "moto[server]"` (in the project's
dev dependencies), which provides the `moto_server` script next to the Python interpreter.
"""

from __future__ import annotations

import json
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
import pytest
import requests
from botocore.config import Config

from ajo_exports_tests.helpers import ExportRun, assert_delivered, dagster_text, lake_rows  # noqa: F401 - used by tests
from ajo_exports_tests.leaks import register_secret
from ajo_exports_tests.servers import free_port

MOTO_SERVER = Path(sys.executable).parent / "moto_server"
REGION = "us-east-1"
# moto accepts any key while authentication is off; this pair only provisions the IAM users below.
BOOTSTRAP_KEY = ("AKIABOOTSTRAP0000000", "bootstrap-secret")


def policy(**statement: object) -> dict:
    return {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", **statement}]}


FULL_ACCESS = policy(Action=["s3:*", "sts:AssumeRole"], Resource="*")
READ_ONLY = policy(Action=["s3:GetObject", "s3:ListBucket"], Resource="*")
TRUST_ANY = policy(Principal={"AWS": "*"}, Action="sts:AssumeRole")


@dataclass(frozen=True)
class Keys:
    access_key_id: str
    secret_access_key: str = field(repr=False)  # pytest prints a failing test's arguments

    def __post_init__(self) -> None:
        register_secret(self.secret_access_key)


@dataclass
class MotoServer:
    """One moto_server process: endpoint, the provisioned identities, and stop/start on the same port.

    moto keeps state in memory, so a restarted server is empty: `start()` provisions it again."""

    location: Path
    port: int = field(default_factory=free_port)
    process: subprocess.Popen | None = None
    writer: Keys | None = None  # s3:* and sts:AssumeRole
    reader: Keys | None = None  # s3:GetObject and s3:ListBucket only
    role_arn: str = ""  # a role with s3:* that anyone may assume

    @property
    def endpoint_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.location / "moto.log"

    def start(self) -> MotoServer:
        if not MOTO_SERVER.exists():
            pytest.fail(f"{MOTO_SERVER} is missing: install moto's server with `pip install \"moto[server]\"`")
        self.location.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [str(MOTO_SERVER), "-H", "127.0.0.1", "-p", str(self.port)], stdout=log, stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + 30
        while True:
            try:
                requests.get(f"{self.endpoint_url}/moto-api/", timeout=1)
                break
            except requests.RequestException:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"moto_server did not start on port {self.port}: see {self.log_path}")
                time.sleep(0.1)
        self._provision()
        return self

    def stop(self) -> None:
        """Kill the server at once, as a crash or a network cut would end it for its clients."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(10)
        self.process = None

    def _provision(self) -> None:
        iam = self._client("iam", BOOTSTRAP_KEY)
        keys = {}
        for user, policy in (("ajo-writer", FULL_ACCESS), ("ajo-reader", READ_ONLY)):
            iam.create_user(UserName=user)
            iam.put_user_policy(UserName=user, PolicyName="access", PolicyDocument=json.dumps(policy))
            made = iam.create_access_key(UserName=user)["AccessKey"]
            keys[user] = Keys(made["AccessKeyId"], made["SecretAccessKey"])
        role = iam.create_role(RoleName="ajo-export-role", AssumeRolePolicyDocument=json.dumps(TRUST_ANY))["Role"]
        iam.put_role_policy(RoleName="ajo-export-role", PolicyName="access", PolicyDocument=json.dumps(FULL_ACCESS))
        self.writer, self.reader, self.role_arn = keys["ajo-writer"], keys["ajo-reader"], role["Arn"]
        # From here on every request must be signed by a provisioned key and allowed by its policy.
        requests.post(f"{self.endpoint_url}/moto-api/reset-auth", data=b"0", timeout=10).raise_for_status()

    def _client(self, service: str, keys: Keys | tuple[str, str], endpoint_url: str | None = None) -> Any:
        key_id, secret = (keys.access_key_id, keys.secret_access_key) if isinstance(keys, Keys) else keys
        return boto3.session.Session().client(
            service, endpoint_url=endpoint_url or self.endpoint_url, region_name=REGION,
            aws_access_key_id=key_id, aws_secret_access_key=secret,
            config=Config(retries={"max_attempts": 1}),
        )

    def s3(self, endpoint_url: str | None = None) -> Any:
        """The vendor SDK with the writer's keys, to set up and inspect what a test delivered."""
        assert self.writer is not None
        return self._client("s3", self.writer, endpoint_url)

    def create_bucket(self, name: str | None = None) -> str:
        """A new bucket (a fresh name per test unless given)."""
        name = name or f"ajo-{uuid.uuid4().hex[:20]}"
        self.s3().create_bucket(Bucket=name)
        return name

    def keys(self, bucket: str, prefix: str = "") -> list[str]:
        """Every object key under `prefix`, listed with the vendor SDK."""
        pages = self.s3().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        return sorted(item["Key"] for page in pages for item in page.get("Contents", []))


class TcpRelay:
    """A byte-for-byte TCP relay in front of a server, which a test can cut (every connection reset, new ones
    refused) and restore: the server keeps its state, so a test can look at what a cut upload left behind."""

    def __init__(self, target_port: int):
        self.target_port = target_port
        self.port = free_port()
        self._listener: socket.socket | None = None
        self._connections: list[socket.socket] = []
        self._lock = threading.Lock()

    @property
    def endpoint_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> TcpRelay:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()
        return self

    def cut(self) -> None:
        """Stop listening and reset every open connection."""
        with self._lock:
            if self._listener is not None:
                self._listener.close()
                self._listener = None
            for conn in self._connections:
                try:  # linger 0: close sends a reset; shutting the read side first wakes the relay thread
                    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    conn.shutdown(socket.SHUT_RD)
                    conn.close()
                except OSError:
                    pass
            self._connections.clear()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target_port))
            except OSError:
                client.close()
                continue
            with self._lock:
                if self._listener is not listener:
                    client.close()
                    upstream.close()
                    return
                self._connections += [client, upstream]
            for src, dst in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(src, dst), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (src, dst):
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MotoServer]:
    """One moto server for the session (S3 tests and the GCS HMAC tests); tests use their own buckets."""
    server = MotoServer(tmp_path_factory.mktemp("moto")).start()
    yield server
    server.stop()


@pytest.fixture
def fresh_s3_server(tmp_path: Path) -> Iterator[MotoServer]:
    """A moto server of the test's own, which the test may stop and start."""
    server = MotoServer(tmp_path / "moto").start()
    yield server
    server.stop()
