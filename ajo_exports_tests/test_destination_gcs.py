"""Google Cloud Storage destination: the JSON API against gcp-storage-emulator (servers/gcs.py), and the HMAC/XML
path against moto's S3 server (servers/s3.py), since the emulator has no XML API."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import google_crc32c
import pytest
import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from ajo_exports.destinations.base import DestinationError
from ajo_exports.destinations.google_cloud_storage import (
    GcsInteropStorage,
    GcsStorage,
    GoogleCloudStorageDestinationConfig,
)
from ajo_exports.destinations.resource import resource_class
from ajo_exports_tests.helpers import ExportRun, run_checks, run_export
from ajo_exports_tests.leaks import register_secret
from ajo_exports_tests.servers.gcs import EMULATOR_KEY, GcsEmulator
from ajo_exports_tests.servers.s3 import MotoServer, assert_delivered, dagster_text

GoogleCloudStorageDestination = resource_class(GoogleCloudStorageDestinationConfig)

KiB, MiB = 1024, 1024 * 1024


def crc32c_b64(data: bytes) -> str:
    return base64.b64encode(google_crc32c.Checksum(data).digest()).decode()


def md5_b64(data: bytes) -> str:
    return base64.b64encode(hashlib.md5(data).digest()).decode()


def json_destination(server: GcsEmulator, bucket: str, folder: str = "exports/ajo",
                     key: str = EMULATOR_KEY) -> GoogleCloudStorageDestination:
    return GoogleCloudStorageDestination(name="gcs-test", bucket=bucket, folder=folder, service_account_json=key,
                                         endpoint_url=server.endpoint_url)


def hmac_destination(server: MotoServer, bucket: str, folder: str = "exports/ajo", *, reader: bool = False,
                     secret: str | None = None) -> GoogleCloudStorageDestination:
    keys = server.reader if reader else server.writer
    assert keys is not None
    return GoogleCloudStorageDestination(name="gcs-test", bucket=bucket, folder=folder,
                                         hmac_access_key_id=keys.access_key_id,
                                         hmac_secret=secret or keys.secret_access_key, endpoint_url=server.endpoint_url)


def service_account_key(token_uri: str) -> tuple[str, str]:
    """A well-formed service account key (fresh RSA key) whose token endpoint is a local server."""
    private_key = rsa.generate_private_key(public_exponent=65537, key_size=2048).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    register_secret(private_key.split("-----")[2].strip().splitlines()[1])
    key = {"type": "service_account", "project_id": "ajo-test", "private_key_id": "k1", "private_key": private_key,
           "client_email": "exporter@ajo-test.iam.gserviceaccount.com", "client_id": "1", "token_uri": token_uri}
    return json.dumps(key), private_key


def random_file(path: Path, size: int) -> bytes:
    data = os.urandom(size)
    path.write_bytes(data)
    return data


@pytest.fixture
def gcs_bucket(gcs_server: GcsEmulator) -> str:
    return gcs_server.create_bucket()


# --- JSON API (service account) against the emulator -----------------------------------------------------------

def test_round_trip_with_exact_keys(gcs_server: GcsEmulator, gcs_bucket: str, tmp_path: Path) -> None:
    files = {"a/one.txt": b"one", "a/b/two.txt": b"two" * 1000, "c.txt": b""}
    with json_destination(gcs_server, gcs_bucket).open_storage() as storage:
        for key, data in files.items():
            (tmp_path / "f").write_bytes(data)
            stored = storage.publish(tmp_path / "f", key)
            assert stored == storage.stat(key)
            assert (stored.key, stored.size, stored.native_checksum) == (key, len(data), f"crc32c:{crc32c_b64(data)}")
        assert [obj.key for obj in storage.list()] == ["a/b/two.txt", "a/one.txt", "c.txt"]
        assert [(obj.key, obj.size) for obj in storage.list("a/")] == [("a/b/two.txt", 3000), ("a/one.txt", 3)]
        assert storage.read_bytes("a/b/two.txt") == files["a/b/two.txt"]
        assert storage.uri("c.txt") == f"gs://{gcs_bucket}/exports/ajo/c.txt"
        assert storage.sink_path("a") == "/exports/ajo/a"

        assert gcs_server.keys(gcs_bucket) == ["exports/ajo/a/b/two.txt", "exports/ajo/a/one.txt", "exports/ajo/c.txt"]
        blob = gcs_server.client().bucket(gcs_bucket).get_blob("exports/ajo/a/one.txt")
        assert (blob.crc32c, blob.md5_hash) == (crc32c_b64(b"one"), md5_b64(b"one"))

        storage.delete("a/one.txt")
        storage.delete("a/one.txt")  # idempotent
        assert storage.stat("a/one.txt") is None
        assert gcs_server.keys(gcs_bucket) == ["exports/ajo/a/b/two.txt", "exports/ajo/c.txt"]
        with pytest.raises(DestinationError, match="no such object"):
            storage.open_read("a/one.txt")


def test_resumable_upload_in_chunks_reads_back_identical(gcs_server: GcsEmulator, gcs_bucket: str,
                                                         tmp_path: Path) -> None:
    """Files above 8 MiB go up as a resumable upload, one request per chunk (smaller ones in a single request)."""
    data = random_file(tmp_path / "big", 9 * MiB + 5)
    with json_destination(gcs_server, gcs_bucket).open_storage() as opened:
        assert isinstance(opened, GcsStorage)
        storage = GcsStorage(opened.name, opened.client, gcs_bucket, "exports", chunk_size=1 * MiB)
        stored = storage.publish(tmp_path / "big", "big.bin")
        assert (stored.size, stored.native_checksum) == (len(data), f"crc32c:{crc32c_b64(data)}")
        chunks = [line for line in gcs_server.log_path.read_text().splitlines()
                  if line.startswith('"PUT') and f"/b/{gcs_bucket}/o" in line and "upload_id=" in line]
        assert len(chunks) == 10  # 9 full 1 MiB chunks and the 5-byte tail, one request each
        assert storage.sha256("big.bin") == hashlib.sha256(data).hexdigest()
        assert gcs_server.client().bucket(gcs_bucket).blob("exports/big.bin").download_as_bytes() == data


def test_missing_bucket_is_terminal_and_names_the_action(gcs_server: GcsEmulator, tmp_path: Path) -> None:
    storage = json_destination(gcs_server, "ajo-no-such-bucket").open_storage()
    with pytest.raises(DestinationError, match=r"list \(storage.objects.list\) of gs://ajo-no-such-bucket/exports/ajo "
                                               r"refused: the bucket does not exist \(HTTP 404\)") as caught:
        storage.list()
    assert not caught.value.transient
    (tmp_path / "f").write_bytes(b"x")
    with pytest.raises(DestinationError, match=r"write \(storage.objects.create\) .* the bucket does not exist"):
        storage.publish(tmp_path / "f", "f")


def test_rejected_service_account_names_no_secret(gcs_server: GcsEmulator, gcs_bucket: str, tmp_path: Path) -> None:
    """The key's token endpoint (here the emulator, which has none) refuses it: terminal, no key material shown."""
    key, private_key = service_account_key(f"{gcs_server.endpoint_url}/token")
    (tmp_path / "f").write_bytes(b"x")
    storage = json_destination(gcs_server, gcs_bucket, key=key).open_storage()
    with pytest.raises(DestinationError) as caught:
        storage.publish(tmp_path / "f", "f")
    message = str(caught.value)
    assert message.startswith("destination 'gcs-test': write (storage.objects.create) of gs://")
    assert "credentials were rejected by the token endpoint" in message and not caught.value.transient
    body = private_key.split("-----")[2].strip()
    assert body[:40] not in message and body[-40:] not in message
    assert gcs_server.keys(gcs_bucket) == []


@pytest.mark.parametrize(
    ("key", "endpoint", "reason"),
    [
        ("not json, but -----BEGIN PRIVATE KEY-----MIIsecret", True, "the value is not JSON"),
        ('{"type": "authorized_user", "refresh_token": "MIIsecret"}', True, '"type": "service_account"'),
        ('{"type": "service_account", "private_key": "MIIsecret"}', True, "lacks client_email, token_uri"),
        (EMULATOR_KEY, False, '{"type": "emulator"} needs endpoint_url'),
    ],
)
def test_unusable_keys_are_refused_before_any_request(key: str, endpoint: bool, reason: str) -> None:
    destination = GoogleCloudStorageDestination(name="gcs-test", bucket="ajo-bucket", service_account_json=key,
                                                endpoint_url="http://127.0.0.1:9" if endpoint else None)
    with pytest.raises(DestinationError) as caught:
        destination.open_storage()
    assert "read the service account key (service_account_json) refused" in str(caught.value)
    assert reason in str(caught.value) and "MIIsecret" not in str(caught.value)


def wait_for_log(log: Path, needle: str, timeout: float = 30) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if log.exists() and needle in log.read_text(errors="replace"):
            return True
        time.sleep(0.005)
    return False


def test_server_killed_mid_resumable_upload_leaves_no_object(fresh_gcs_server: GcsEmulator, tmp_path: Path) -> None:
    """Chunks have arrived, the server dies: publish fails as transient; after a restart (objects are kept on disk)
    the object is not there, because only the final chunk would have finalized it."""
    server = fresh_gcs_server
    bucket = server.create_bucket()
    data = random_file(tmp_path / "big", 16 * MiB)
    opened = json_destination(server, bucket).open_storage()
    storage = GcsStorage(opened.name, opened.client, bucket, "exports", chunk_size=256 * KiB)
    killer = threading.Thread(target=lambda: wait_for_log(server.log_path, "upload_id=") and server.stop())
    killer.start()
    with pytest.raises(DestinationError) as caught:
        storage.publish(tmp_path / "big", "big.bin")
    killer.join()
    assert caught.value.transient
    message = str(caught.value)
    assert "write (storage.objects.create) of gs://" in message and "could not be reached" in message

    server.start()
    assert server.keys(bucket) == [] and storage.stat("big.bin") is None
    assert storage.publish(tmp_path / "big", "big.bin").size == len(data)
    assert server.keys(bucket) == ["exports/big.bin"]


# --- XML API (HMAC keys) against moto's S3 server --------------------------------------------------------------

def test_hmac_round_trip_with_exact_keys(s3_server: MotoServer, tmp_path: Path) -> None:
    bucket = s3_server.create_bucket()
    with hmac_destination(s3_server, bucket).open_storage() as storage:
        assert isinstance(storage, GcsInteropStorage)
        (tmp_path / "f").write_bytes(b"hello")
        stored = storage.publish(tmp_path / "f", "a/hello.txt")
        assert stored == storage.stat("a/hello.txt")
        assert stored.native_checksum == f"md5:{md5_b64(b'hello')}"  # from the single-request ETag
        assert [obj.key for obj in storage.list()] == ["a/hello.txt"]
        assert storage.read_bytes("a/hello.txt") == b"hello"
        assert storage.uri("a/hello.txt") == f"gs://{bucket}/exports/ajo/a/hello.txt"
        assert s3_server.keys(bucket) == ["exports/ajo/a/hello.txt"]
        head = s3_server.s3().head_object(Bucket=bucket, Key="exports/ajo/a/hello.txt", ChecksumMode="ENABLED")
        # no x-amz-checksum-* headers were sent (boto3's default CRC32 included): GCS's XML API rejects them
        assert [name for name in head if name.startswith("Checksum")] == []
        storage.delete("a/hello.txt")
        storage.delete("a/hello.txt")
        assert s3_server.keys(bucket) == []


def test_hmac_multipart_upload_reads_back_identical(s3_server: MotoServer, tmp_path: Path) -> None:
    bucket = s3_server.create_bucket()
    data = random_file(tmp_path / "big", 11 * MiB)
    with hmac_destination(s3_server, bucket).open_storage() as opened:
        storage = GcsInteropStorage(opened.name, opened.client, bucket, "exports", min_part_size=5 * MiB)
        stored = storage.publish(tmp_path / "big", "big.bin")
        assert s3_server.s3().head_object(Bucket=bucket, Key="exports/big.bin")["ETag"].strip('"').endswith("-3")
        assert stored.native_checksum is None  # a multipart ETag is no MD5, and moto sends no x-goog-hash
        assert storage.sha256("big.bin") == hashlib.sha256(data).hexdigest()


def test_x_goog_hash_is_the_native_checksum() -> None:
    hashes = "crc32c=n03x6A==,md5=Ojk9c3dhfxgoKVVHYwFbHQ=="
    head = {"ETag": '"-"', "ResponseMetadata": {"HTTPHeaders": {"x-goog-hash": hashes}}}
    assert GcsInteropStorage.native_checksum(GcsInteropStorage.__new__(GcsInteropStorage), head) == "crc32c:n03x6A=="


def test_hmac_refusals_name_gcs_permissions_and_no_secret(s3_server: MotoServer, tmp_path: Path) -> None:
    bucket = s3_server.create_bucket()
    (tmp_path / "f").write_bytes(b"x")
    reader = hmac_destination(s3_server, bucket, reader=True).open_storage()
    assert reader.list() == []
    with pytest.raises(DestinationError, match=r"write \(storage.objects.create\) of gs://.* permission denied"):
        reader.publish(tmp_path / "f", "f")
    with pytest.raises(DestinationError, match=r"delete \(storage.objects.delete\) of gs://.* permission denied"):
        reader.delete("f")
    wrong = "WrongHmacSecretWrongHmacSecretWrong01234"
    with pytest.raises(DestinationError) as caught:
        hmac_destination(s3_server, bucket, secret=wrong).open_storage().list()
    assert "list (storage.objects.list)" in str(caught.value) and "the secret key does not match" in str(caught.value)
    assert wrong not in str(caught.value)


# --- end to end: exports materialized through Dagster --------------------------------------------------------

EXPORT_TIME = datetime(2026, 11, 29, 2, 0, tzinfo=UTC)
FEEDBACK, STEPS = "ajo_message_feedback_event_dataset", "journey_step_events"
KEY_ENV = "AJO_TEST_GCS_SERVICE_ACCOUNT"
HMAC_ID_ENV, HMAC_SECRET_ENV = "AJO_TEST_GCS_HMAC_ID", "AJO_TEST_GCS_HMAC_SECRET"


def gcs_config(bucket: str, endpoint_url: str, *, hmac: bool = False, **flow: object) -> str:
    auth = {"hmac_access_key_id": f"${{{HMAC_ID_ENV}}}", "hmac_secret": f"${{{HMAC_SECRET_ENV}}}"} if hmac else {
        "service_account_json": f"${{{KEY_ENV}}}"
    }
    return yaml.safe_dump({
        "destinations": [{"name": "gcs", "type": "google_cloud_storage", "bucket": bucket, "folder": "exports/ajo",
                          "endpoint_url": endpoint_url, **auth}],
        "dataflows": [{"name": "to-gcs", "destination": "gcs", "datasets": [FEEDBACK, STEPS], **flow}],
    }, sort_keys=False)


def expected_keys(run: ExportRun) -> list[str]:
    return sorted(f"exports/ajo/{key}" for slug in (FEEDBACK, STEPS)
                  for key in [*run.exports[slug]["keys"], run.exports[slug]["manifest_key"]])


def test_export_through_dagster_with_a_service_account(gcs_server: GcsEmulator, gcs_bucket: str, lake_root: Path,
                                                       instance, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv(KEY_ENV, EMULATOR_KEY)
    run = run_export(gcs_config(gcs_bucket, gcs_server.endpoint_url), lake_root, dataflow="to-gcs",
                     export_time=EXPORT_TIME, instance=instance)
    bucket = gcs_server.client().bucket(gcs_bucket)
    assert_delivered(
        run, list_keys=lambda prefix: gcs_server.keys(gcs_bucket, prefix),
        download=lambda key: bucket.blob(key).download_as_bytes(),
        native_checksum=lambda key: f"crc32c:{bucket.get_blob(key).crc32c}",
        folder="exports/ajo", destination="gcs", lake_root=lake_root, slugs=[FEEDBACK, STEPS],
        export_time=EXPORT_TIME, scratch=tmp_path,
    )
    assert gcs_server.keys(gcs_bucket) == expected_keys(run)
    assert run.exports[STEPS]["manifest_uri"] == f"gs://{gcs_bucket}/exports/ajo/{run.exports[STEPS]['manifest_key']}"


def test_export_through_dagster_with_hmac_keys(s3_server: MotoServer, lake_root: Path, instance, tmp_path: Path,
                                               monkeypatch) -> None:
    assert s3_server.writer is not None
    bucket = s3_server.create_bucket()
    monkeypatch.setenv(HMAC_ID_ENV, s3_server.writer.access_key_id)
    monkeypatch.setenv(HMAC_SECRET_ENV, s3_server.writer.secret_access_key)
    run = run_export(gcs_config(bucket, s3_server.endpoint_url, hmac=True), lake_root, dataflow="to-gcs",
                     export_time=EXPORT_TIME, instance=instance)
    sdk = s3_server.s3()

    def md5_of(key: str) -> str:
        etag = sdk.head_object(Bucket=bucket, Key=key)["ETag"].strip('"')
        return "md5:" + base64.b64encode(bytes.fromhex(etag)).decode()

    assert_delivered(
        run, list_keys=lambda prefix: s3_server.keys(bucket, prefix),
        download=lambda key: sdk.get_object(Bucket=bucket, Key=key)["Body"].read(), native_checksum=md5_of,
        folder="exports/ajo", destination="gcs", lake_root=lake_root, slugs=[FEEDBACK, STEPS],
        export_time=EXPORT_TIME, scratch=tmp_path,
    )
    assert s3_server.keys(bucket) == expected_keys(run)


def test_check_names_a_deleted_and_a_corrupted_file(gcs_server: GcsEmulator, gcs_bucket: str, lake_root: Path,
                                                    instance, monkeypatch) -> None:
    monkeypatch.setenv(KEY_ENV, EMULATOR_KEY)
    config = gcs_config(gcs_bucket, gcs_server.endpoint_url, max_rows_per_file=100)
    run = run_export(config, lake_root, dataflow="to-gcs", export_time=EXPORT_TIME, instance=instance)
    assert run.success and all(passed for passed, _ in run.checks.values()), run.checks
    bucket = gcs_server.client().bucket(gcs_bucket)
    corrupted = f"exports/ajo/{run.exports[FEEDBACK]['keys'][0]}"
    data = bytearray(bucket.blob(corrupted).download_as_bytes())
    data[len(data) // 2] ^= 0xFF
    bucket.blob(corrupted).upload_from_string(bytes(data))
    deleted = f"exports/ajo/{run.exports[STEPS]['keys'][-1]}"
    bucket.blob(deleted).delete()

    checks = run_checks(config, lake_root, dataflow="to-gcs", instance=instance)
    passed, description = checks[FEEDBACK]
    assert not passed and corrupted.rsplit("/", 1)[1] in description and "sha256 expected" in description
    passed, description = checks[STEPS]
    assert not passed and deleted.rsplit("/", 1)[1] in description and "missing" in description


@pytest.mark.parametrize("path", ["service_account", "hmac"])
def test_wrong_credentials_fail_the_run_without_leaking_them(
    gcs_server: GcsEmulator, s3_server: MotoServer, lake_root: Path, instance, monkeypatch, path: str
) -> None:
    if path == "hmac":
        assert s3_server.writer is not None
        bucket, endpoint = s3_server.create_bucket(), s3_server.endpoint_url
        secret = "WrongHmacSecretWrongHmacSecret0123456789"
        monkeypatch.setenv(HMAC_ID_ENV, s3_server.writer.access_key_id)
        monkeypatch.setenv(HMAC_SECRET_ENV, secret)
        reason, listed = "the secret key does not match", lambda: s3_server.keys(bucket)
    else:
        bucket, endpoint = gcs_server.create_bucket(), gcs_server.endpoint_url
        key, private_key = service_account_key(f"{gcs_server.endpoint_url}/token")
        monkeypatch.setenv(KEY_ENV, key)
        secret = private_key.split("-----")[2].strip()[:48]
        reason, listed = "credentials were rejected", lambda: gcs_server.keys(bucket)
    run = run_export(gcs_config(bucket, endpoint, hmac=path == "hmac"), lake_root, dataflow="to-gcs",
                     export_time=EXPORT_TIME, instance=instance)
    assert not run.success and run.error is not None
    assert "destination 'gcs'" in run.error and reason in run.error, run.error
    logged = dagster_text(instance, run.run_id)
    assert "DestinationError" in logged and secret not in run.error and secret not in logged
    assert listed() == []


def watch_then(list_parts: Callable[[], list[str]], action: Callable[[], None], seen: list[str]) -> threading.Thread:
    """Once two part files are visible on the server, run `action`."""
    def watch() -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and len(seen) < 2:
            seen[:] = [key for key in list_parts() if "/part-" in key]
            time.sleep(0.01)
        action()

    thread = threading.Thread(target=watch)
    thread.start()
    return thread


def test_server_stopped_mid_export_then_rerun(fresh_gcs_server: GcsEmulator, lake_root: Path, instance,
                                              monkeypatch) -> None:
    """The emulator is killed once the first part files land: the run fails; restarted (it keeps finalized
    objects on disk) it shows parts but no manifest; a rerun of the window leaves exactly one set of files."""
    server = fresh_gcs_server
    bucket = server.create_bucket()
    monkeypatch.setenv(KEY_ENV, EMULATOR_KEY)
    config = gcs_config(bucket, server.endpoint_url, max_rows_per_file=4)
    seen: list[str] = []
    watcher = watch_then(lambda: server.keys(bucket), server.stop, seen)
    failed = run_export(config, lake_root, dataflow="to-gcs", export_time=EXPORT_TIME, instance=instance)
    watcher.join()
    assert len(seen) >= 2 and not failed.success and failed.error is not None
    assert "destination 'gcs'" in failed.error and "could not be reached" in failed.error, failed.error

    server.start()
    left = server.keys(bucket)
    assert left and not [key for key in left if "/manifest-" in key]
    rerun = run_export(config, lake_root, dataflow="to-gcs", export_time=EXPORT_TIME, instance=instance)
    assert rerun.success, rerun.error
    assert server.keys(bucket) == expected_keys(rerun)
    assert all(passed for passed, _ in rerun.checks.values()), rerun.checks
