"""The destinations the benchmark writes to, each a real server on 127.0.0.1 started by the tests' own classes.

A `Target` bundles what every case needs: the exports.yaml destination entry (secrets as `${VAR}`), the secret
values for the environment, what the floor subprocess needs to upload with the vendor SDK (`spec`, holding only
the names of the secret variables), the server's pid (to charge its CPU to each case), and `clear()`, which
empties the destination between cases: moto and the GCS emulator keep every object in memory.
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

S3_KEY_ENV, S3_SECRET_ENV = "BENCH_S3_KEY_ID", "BENCH_S3_SECRET"
AZURE_ENV = "BENCH_AZURE_CONNECTION_STRING"
GCS_ENV = "BENCH_GCS_SERVICE_ACCOUNT"
SFTP_ENV = "BENCH_SFTP_KEY_B64"
FOLDER = "ajo"


@dataclass
class Target:
    """One destination: its server, its exports.yaml entry and how to reach it from a plain SDK."""

    kind: str
    destination: dict[str, Any]
    env: dict[str, str] = field(default_factory=dict)
    spec: dict[str, Any] = field(default_factory=dict)
    server: Any = None
    cleanup: list[Any] = field(default_factory=list)

    @property
    def name(self) -> str:
        return str(self.destination["name"])

    @property
    def server_pid(self) -> int | None:
        process = getattr(self.server, "process", None)
        return process.pid if process is not None else None

    def clear(self) -> None:
        """Remove every object the cases wrote (the destination's folder and the floor's and dlt's prefixes)."""
        getattr(self, f"_clear_{self.kind}")()

    def stored_bytes(self, prefix: str) -> int:
        """Total size of the objects under `prefix` (dlt's output is measured this way)."""
        assert self.kind == "s3", "only the S3 target lists sizes"
        s3 = self.server.s3()
        pages = s3.get_paginator("list_objects_v2").paginate(Bucket=self.spec["bucket"], Prefix=prefix)
        return sum(item["Size"] for page in pages for item in page.get("Contents", []))

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()
        for step in reversed(self.cleanup):
            step()

    # -- clearing -----------------------------------------------------------------------------------------------

    def _clear_s3(self) -> None:
        s3, bucket = self.server.s3(), self.spec["bucket"]
        keys = [item["Key"] for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket)
                for item in page.get("Contents", [])]
        for start in range(0, len(keys), 1000):
            s3.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": k} for k in keys[start:start + 1000]]})

    def _clear_azure(self) -> None:
        container = self.server.service().get_container_client(self.spec["container"])
        for blob in container.list_blobs():
            container.delete_blob(blob.name)

    def _clear_gcs(self) -> None:
        bucket = self.server.client().bucket(self.spec["bucket"])
        for blob in bucket.list_blobs():
            blob.delete()

    def _clear_sftp(self) -> None:
        shutil.rmtree(self.server.home / self.spec["folder"], ignore_errors=True)
        shutil.rmtree(self.server.home / "bench-floor", ignore_errors=True)

    def _clear_local(self) -> None:
        shutil.rmtree(self.destination["path"], ignore_errors=True)


def start_s3(location: Path) -> Target:
    """moto's server with IAM auth on (the tests' MotoServer), a bucket and the writer's keys."""
    from ajo_exports_tests.servers.s3 import REGION, MotoServer

    server = MotoServer(location).start()
    assert server.writer is not None
    bucket = server.create_bucket("ajo-bench")
    return Target(
        kind="s3",
        destination={
            "name": "s3", "type": "amazon_s3", "bucket": bucket, "folder": FOLDER,
            "endpoint_url": server.endpoint_url, "region": REGION,
            "access_key_id": f"${{{S3_KEY_ENV}}}", "secret_access_key": f"${{{S3_SECRET_ENV}}}",
        },
        env={S3_KEY_ENV: server.writer.access_key_id, S3_SECRET_ENV: server.writer.secret_access_key},
        spec={"kind": "s3", "endpoint_url": server.endpoint_url, "region": REGION, "bucket": bucket,
              "key_env": S3_KEY_ENV, "secret_env": S3_SECRET_ENV},
        server=server,
    )


def start_azure(location: Path) -> Target:
    """Azurite (the tests' class: 127.0.0.1, --disableTelemetry) and a container."""
    from ajo_exports_tests.servers.azurite import Azurite

    server = Azurite(location)
    server.start()
    container = server.create_container("ajo-bench").container_name
    return Target(
        kind="azure",
        destination={"name": "blob", "type": "azure_blob", "connection_string": f"${{{AZURE_ENV}}}",
                     "container": container, "folder": FOLDER},
        env={AZURE_ENV: server.connection_string()},
        spec={"kind": "azure", "container": container, "env": AZURE_ENV, "max_concurrency": 4},
        server=server,
    )


def start_gcs(location: Path) -> Target:
    """gcp-storage-emulator (in memory) and a bucket; the destination uses the emulator key + endpoint_url."""
    from ajo_exports_tests.servers.gcs import EMULATOR_KEY, GcsEmulator

    server = GcsEmulator(location).start()
    bucket = server.create_bucket("ajo-bench")
    return Target(
        kind="gcs",
        destination={"name": "gcs", "type": "google_cloud_storage", "bucket": bucket, "folder": FOLDER,
                     "endpoint_url": server.endpoint_url, "service_account_json": f"${{{GCS_ENV}}}"},
        env={GCS_ENV: EMULATOR_KEY},
        spec={"kind": "gcs", "endpoint_url": server.endpoint_url, "bucket": bucket},
        server=server,
    )


def start_sftp(location: Path) -> Target:
    """OpenSSH's sshd (the tests' Sshd and throwaway account, removed in stop()), key login, pinned host keys."""
    from ajo_exports_tests.servers.sshd import Sshd, _create_account, _remove_account

    # sshd reads the AuthorizedKeysFile as the login user: its folder must be reachable, so not under a 0700 scratch
    account_dir = Path(tempfile.mkdtemp(prefix="ajo-bench-sftp-account-"))
    account = _create_account(account_dir)
    cleanup = [lambda: (_remove_account(account), shutil.rmtree(account_dir, ignore_errors=True))]
    try:
        server = Sshd(location / "sshd", account)
        server.start()
    except BaseException:
        cleanup[0]()
        raise
    known_hosts = location / "known_hosts"
    known_hosts.write_text(server.known_hosts())
    folder = "ajo-bench"
    return Target(
        kind="sftp",
        destination={"name": "sftp", "type": "sftp", "host": server.host, "port": server.port,
                     "username": server.username, "private_key": f"${{{SFTP_ENV}}}",
                     "known_hosts": server.known_hosts(), "folder": folder},
        env={SFTP_ENV: account.private_key},
        spec={"kind": "sftp", "host": server.host, "port": server.port, "username": server.username,
              "key_env": SFTP_ENV, "known_hosts_file": str(known_hosts), "folder": folder},
        server=server,
        cleanup=cleanup,
    )


def local_target(path: Path) -> Target:
    """A local folder: no server, for the memory cases where only the export's own footprint matters."""
    return Target(kind="local", destination={"name": "local", "type": "local", "path": str(path)},
                  spec={"kind": "local", "path": str(path)})


STARTERS = {"s3": start_s3, "azure": start_azure, "gcs": start_gcs, "sftp": start_sftp}


def start(kind: str, location: Path) -> Target:
    """Start one target's server; a server that cannot start raises RuntimeError with its reason."""
    try:
        return STARTERS[kind](location)
    except BaseException as exc:  # the tests' classes fail through pytest.fail (an OutcomeException)
        if isinstance(exc, KeyboardInterrupt):
            raise
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else repr(exc)
        raise RuntimeError(f"{kind} server did not start: {reason}") from exc
