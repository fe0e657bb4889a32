"""Amazon S3 destination against a real moto server with IAM authentication on (see servers/s3.py)."""

from __future__ import annotations

import base64
import hashlib
import os
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest
import yaml
from botocore.exceptions import ClientError

from ajo_exports.catalog import get_dataset
from ajo_exports.destinations.amazon_s3 import MIN_PART_SIZE, AmazonS3DestinationConfig, S3Storage, part_size
from ajo_exports.destinations.base import DestinationError
from ajo_exports.destinations.resource import resource_class
from ajo_exports_tests.helpers import ExportRun, run_checks, run_export
from ajo_exports_tests.servers.s3 import Keys, MotoServer, TcpRelay, assert_delivered, dagster_text

AmazonS3Destination = resource_class(AmazonS3DestinationConfig)

MiB = 1024 * 1024


def b64_sha256(data: bytes) -> str:
    return base64.b64encode(hashlib.sha256(data).digest()).decode()


def destination(server: MotoServer, bucket: str, *, folder: str = "exports/ajo", secret: str | None = None,
                key_id: str | None = None) -> AmazonS3Destination:
    assert server.writer is not None
    return AmazonS3Destination(
        name="s3-test", bucket=bucket, folder=folder, endpoint_url=server.endpoint_url, region="us-east-1",
        access_key_id=key_id or server.writer.access_key_id,
        secret_access_key=secret or server.writer.secret_access_key,
    )


def random_file(path: Path, size: int) -> bytes:
    data = os.urandom(size)
    path.write_bytes(data)
    return data


@pytest.fixture
def bucket(s3_server: MotoServer) -> str:
    return s3_server.create_bucket()


def test_round_trip_with_exact_keys(s3_server: MotoServer, bucket: str, tmp_path: Path) -> None:
    files = {"a/one.txt": b"one", "a/b/two.txt": b"two" * 1000, "c.txt": b""}
    with destination(s3_server, bucket).open_storage() as storage:
        for key, data in files.items():
            (tmp_path / "f").write_bytes(data)
            stored = storage.publish(tmp_path / "f", key)
            assert stored == storage.stat(key)
            assert (stored.key, stored.size, stored.native_checksum) == (key, len(data), f"sha256:{b64_sha256(data)}")
        assert [obj.key for obj in storage.list()] == ["a/b/two.txt", "a/one.txt", "c.txt"]
        assert [(obj.key, obj.size) for obj in storage.list("a/")] == [("a/b/two.txt", 3000), ("a/one.txt", 3)]
        assert storage.read_bytes("a/b/two.txt") == files["a/b/two.txt"]
        assert storage.uri("c.txt") == f"s3://{bucket}/exports/ajo/c.txt"
        assert storage.sink_path("a") == "/exports/ajo/a"

        sdk = s3_server.s3()
        assert s3_server.keys(bucket) == ["exports/ajo/a/b/two.txt", "exports/ajo/a/one.txt", "exports/ajo/c.txt"]
        head = sdk.head_object(Bucket=bucket, Key="exports/ajo/a/one.txt", ChecksumMode="ENABLED")
        assert head["ChecksumSHA256"] == b64_sha256(b"one")

        storage.delete("a/one.txt")
        storage.delete("a/one.txt")  # idempotent
        assert storage.stat("a/one.txt") is None
        assert s3_server.keys(bucket) == ["exports/ajo/a/b/two.txt", "exports/ajo/c.txt"]
        with pytest.raises(DestinationError, match="no such object"):
            storage.open_read("a/one.txt")


def test_multipart_upload_reads_back_identical(s3_server: MotoServer, bucket: str, tmp_path: Path) -> None:
    data = random_file(tmp_path / "big", 13 * MiB)
    with destination(s3_server, bucket).open_storage() as opened:
        storage = S3Storage(opened.name, opened.client, bucket, "exports", min_part_size=5 * MiB)
        stored = storage.publish(tmp_path / "big", "big.bin")
        assert stored.size == len(data)
        # S3's checksum of a multipart object is the SHA-256 of the parts' SHA-256s (AWS appends "-<parts>")
        parts = [data[i:i + 5 * MiB] for i in range(0, len(data), 5 * MiB)]
        composite = b64_sha256(b"".join(hashlib.sha256(part).digest() for part in parts))
        assert stored.native_checksum in (f"sha256:{composite}", f"sha256:{composite}-3")
        head = s3_server.s3().head_object(Bucket=bucket, Key="exports/big.bin")
        assert head["ETag"].strip('"').endswith("-3")
        assert storage.sha256("big.bin") == hashlib.sha256(data).hexdigest()
        body = s3_server.s3().get_object(Bucket=bucket, Key="exports/big.bin")["Body"].read()
        assert body == data


def test_part_size_respects_minimum_and_part_limit() -> None:
    assert part_size(1) == MIN_PART_SIZE
    assert part_size(80_000 * MiB) == MIN_PART_SIZE
    assert part_size(80_001 * MiB) == 9 * MiB
    assert part_size(5 * 1024**4) * 10_000 >= 5 * 1024**4


@pytest.mark.parametrize("wrong", ["secret", "key"])
def test_wrong_credentials_are_refused_without_the_secret(
    s3_server: MotoServer, bucket: str, tmp_path: Path, wrong: str
) -> None:
    secret = "WrongSecretWrongSecretWrongSecret0123456"
    key_id = "AKIAWRONGWRONGWRONG0" if wrong == "key" else None
    (tmp_path / "f").write_bytes(b"x")
    storage = destination(s3_server, bucket, secret=secret, key_id=key_id).open_storage()
    for attempt in (lambda: storage.list(), lambda: storage.publish(tmp_path / "f", "f")):
        with pytest.raises(DestinationError) as caught:
            attempt()
        message = str(caught.value)
        assert message.startswith("destination 's3-test': ")
        expected = "the secret key does not match" if wrong == "secret" else "the access key is not recognised"
        assert expected in message
        assert secret not in message and not caught.value.transient
    assert s3_server.keys(bucket) == []


def test_missing_bucket_and_missing_permissions_name_the_action(
    s3_server: MotoServer, bucket: str, tmp_path: Path
) -> None:
    (tmp_path / "f").write_bytes(b"x")
    with pytest.raises(DestinationError, match=r"list \(s3:ListBucket\) of s3://ajo-no-such-bucket/exports/ajo "
                                               r"refused: the bucket does not exist \(NoSuchBucket\)"):
        destination(s3_server, "ajo-no-such-bucket").open_storage().list()

    assert s3_server.reader is not None
    reader = destination(s3_server, bucket, key_id=s3_server.reader.access_key_id,
                         secret=s3_server.reader.secret_access_key).open_storage()
    assert reader.list() == []  # s3:ListBucket is granted
    with pytest.raises(DestinationError, match=r"write \(s3:PutObject\) of .* refused: permission denied"):
        reader.publish(tmp_path / "f", "f")
    with pytest.raises(DestinationError, match=r"delete \(s3:DeleteObject\) of .* refused: permission denied"):
        reader.delete("f")


def test_assume_role_through_sts(s3_server: MotoServer, bucket: str, tmp_path: Path,
                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """STS is asked with explicit platform credentials; the S3 calls then run with the role's session keys."""
    assert s3_server.writer is not None and s3_server.reader is not None
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", s3_server.writer.access_key_id)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", s3_server.writer.secret_access_key)
    role = AmazonS3Destination(name="s3-role", bucket=bucket, folder="role", role_arn=s3_server.role_arn,
                               endpoint_url=s3_server.endpoint_url, region="us-east-1")
    (tmp_path / "f").write_bytes(b"assumed")
    with role.open_storage() as storage:
        assert isinstance(storage, S3Storage)
        credentials = storage.client._request_signer._credentials  # the role session's, not the platform's keys
        assert credentials.token and credentials.access_key != s3_server.writer.access_key_id
        storage.publish(tmp_path / "f", "f.txt")
    assert s3_server.keys(bucket) == ["role/f.txt"]

    # the reader may not call sts:AssumeRole: refused before any S3 call, naming the permission
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", s3_server.reader.access_key_id)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", s3_server.reader.secret_access_key)
    with pytest.raises(DestinationError, match=r"assume role .* \(sts:AssumeRole\) refused: permission denied"):
        role.open_storage()
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    with pytest.raises(DestinationError, match="no credentials to call STS with"):
        role.open_storage()


def wait_for_log(log: Path, needle: str, timeout: float = 30) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if log.exists() and needle in log.read_text(errors="replace"):
            return True
        time.sleep(0.005)
    return False


def test_server_killed_mid_multipart_upload(fresh_s3_server: MotoServer, tmp_path: Path) -> None:
    """The first part has arrived, the server dies: publish fails as transient and names the destination."""
    server = fresh_s3_server
    bucket = server.create_bucket()
    random_file(tmp_path / "big", 60 * MiB)
    opened = destination(server, bucket).open_storage()
    storage = S3Storage(opened.name, opened.client, bucket, "exports", min_part_size=5 * MiB)
    killer = threading.Thread(target=lambda: wait_for_log(server.log_path, "partNumber=") and server.stop())
    killer.start()
    started = time.monotonic()
    with pytest.raises(DestinationError) as caught:
        storage.publish(tmp_path / "big", "big.bin")
    killer.join()
    assert caught.value.transient
    assert "write (s3:PutObject) of s3://" in str(caught.value) and "could not be reached" in str(caught.value)
    assert server.writer is not None and server.writer.secret_access_key not in str(caught.value)
    assert time.monotonic() - started < 60

    server.start()  # a new, empty server on the same port: the storage works again without reopening
    server.create_bucket(bucket)
    storage.client = destination(server, bucket).open_storage().client  # new keys were provisioned
    storage.publish(tmp_path / "big", "big.bin")
    assert server.keys(bucket) == ["exports/big.bin"]


def test_upload_cut_mid_way_leaves_no_partial_object(fresh_s3_server: MotoServer, tmp_path: Path) -> None:
    """Connections cut during a multipart upload: the key never appears, only an incomplete upload remains."""
    server = fresh_s3_server
    bucket = server.create_bucket()
    data = random_file(tmp_path / "big", 60 * MiB)
    relay = TcpRelay(server.port).start()
    assert server.writer is not None
    via_relay = AmazonS3Destination(
        name="s3-test", bucket=bucket, folder="exports", endpoint_url=relay.endpoint_url, region="us-east-1",
        access_key_id=server.writer.access_key_id, secret_access_key=server.writer.secret_access_key,
    ).open_storage()
    storage = S3Storage(via_relay.name, via_relay.client, bucket, "exports", min_part_size=5 * MiB)
    cutter = threading.Thread(target=lambda: wait_for_log(server.log_path, "partNumber=") and relay.cut())
    cutter.start()
    with pytest.raises(DestinationError) as caught:
        storage.publish(tmp_path / "big", "big.bin")
    cutter.join()
    assert caught.value.transient
    assert server.keys(bucket) == []
    uploads = server.s3().list_multipart_uploads(Bucket=bucket).get("Uploads", [])
    assert [upload["Key"] for upload in uploads] == ["exports/big.bin"]  # parts arrived, the object never did
    with pytest.raises(ClientError):
        server.s3().head_object(Bucket=bucket, Key="exports/big.bin")
    relay.start()
    assert storage.publish(tmp_path / "big", "big.bin").size == len(data)
    assert server.keys(bucket) == ["exports/big.bin"]


# --- end to end: exports materialized through Dagster into the moto server --------------------------------------

EXPORT_TIME = datetime(2026, 11, 29, 2, 0, tzinfo=UTC)
FEEDBACK, STEPS = "ajo_message_feedback_event_dataset", "journey_step_events"
KEY_ENV, SECRET_ENV = "AJO_TEST_S3_ACCESS_KEY_ID", "AJO_TEST_S3_SECRET"


def s3_config(bucket: str, endpoint_url: str, *, folder: str = "exports/ajo", role_arn: str | None = None,
              **flow: object) -> str:
    auth = {"role_arn": role_arn} if role_arn else {
        "access_key_id": f"${{{KEY_ENV}}}", "secret_access_key": f"${{{SECRET_ENV}}}"
    }
    return yaml.safe_dump({
        "destinations": [{"name": "s3", "type": "amazon_s3", "bucket": bucket, "folder": folder,
                          "endpoint_url": endpoint_url, "region": "us-east-1", **auth}],
        "dataflows": [{"name": "to-s3", "destination": "s3", "datasets": [FEEDBACK, STEPS], **flow}],
    }, sort_keys=False)


def use_keys(monkeypatch: pytest.MonkeyPatch, keys: Keys | None, secret: str | None = None) -> None:
    assert keys is not None
    monkeypatch.setenv(KEY_ENV, keys.access_key_id)
    monkeypatch.setenv(SECRET_ENV, secret or keys.secret_access_key)


def assert_s3_delivered(server: MotoServer, bucket: str, run: ExportRun, lake_root: Path, scratch: Path) -> None:
    sdk = server.s3()
    assert_delivered(
        run, list_keys=lambda prefix: server.keys(bucket, prefix),
        download=lambda key: sdk.get_object(Bucket=bucket, Key=key)["Body"].read(),
        native_checksum=lambda key: "sha256:" + sdk.head_object(Bucket=bucket, Key=key, ChecksumMode="ENABLED")[
            "ChecksumSHA256"],
        folder="exports/ajo", destination="s3", lake_root=lake_root, slugs=[FEEDBACK, STEPS],
        export_time=EXPORT_TIME, scratch=scratch,
    )


def test_export_through_dagster(s3_server: MotoServer, bucket: str, lake_root: Path, instance, tmp_path: Path,
                                monkeypatch: pytest.MonkeyPatch) -> None:
    use_keys(monkeypatch, s3_server.writer)
    run = run_export(s3_config(bucket, s3_server.endpoint_url), lake_root, dataflow="to-s3",
                     export_time=EXPORT_TIME, instance=instance)
    assert_s3_delivered(s3_server, bucket, run, lake_root, tmp_path)
    assert run.exports[FEEDBACK]["manifest_uri"] == f"s3://{bucket}/exports/ajo/{run.exports[FEEDBACK]['manifest_key']}"
    assert {key.split("/")[2] for key in s3_server.keys(bucket)} == {
        get_dataset(FEEDBACK).dataset_id, get_dataset(STEPS).dataset_id
    }


def test_export_with_an_assumed_role(s3_server: MotoServer, bucket: str, lake_root: Path, instance, tmp_path: Path,
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    assert s3_server.writer is not None
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", s3_server.writer.access_key_id)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", s3_server.writer.secret_access_key)
    run = run_export(s3_config(bucket, s3_server.endpoint_url, role_arn=s3_server.role_arn), lake_root,
                     dataflow="to-s3", export_time=EXPORT_TIME, instance=instance)
    assert_s3_delivered(s3_server, bucket, run, lake_root, tmp_path)


def test_check_names_a_deleted_and_a_corrupted_file(s3_server: MotoServer, bucket: str, lake_root: Path, instance,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    use_keys(monkeypatch, s3_server.writer)
    config = s3_config(bucket, s3_server.endpoint_url, max_rows_per_file=100)
    run = run_export(config, lake_root, dataflow="to-s3", export_time=EXPORT_TIME, instance=instance)
    assert run.success and all(passed for passed, _ in run.checks.values()), run.checks
    sdk = s3_server.s3()
    corrupted = f"exports/ajo/{run.exports[FEEDBACK]['keys'][0]}"
    data = bytearray(sdk.get_object(Bucket=bucket, Key=corrupted)["Body"].read())
    data[len(data) // 2] ^= 0xFF
    sdk.put_object(Bucket=bucket, Key=corrupted, Body=bytes(data))
    deleted = f"exports/ajo/{run.exports[STEPS]['keys'][-1]}"
    sdk.delete_object(Bucket=bucket, Key=deleted)

    checks = run_checks(config, lake_root, dataflow="to-s3", instance=instance)
    passed, description = checks[FEEDBACK]
    assert not passed and corrupted.rsplit("/", 1)[1] in description and "sha256 expected" in description
    passed, description = checks[STEPS]
    assert not passed and deleted.rsplit("/", 1)[1] in description and "missing" in description


def test_wrong_secret_fails_the_run_without_leaking_it(s3_server: MotoServer, bucket: str, lake_root: Path, instance,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    wrong = "WrongSecretWrongSecretWrongSecret0123456"
    use_keys(monkeypatch, s3_server.writer, secret=wrong)
    run = run_export(s3_config(bucket, s3_server.endpoint_url), lake_root, dataflow="to-s3", export_time=EXPORT_TIME,
                     instance=instance)
    assert not run.success and run.error is not None
    assert "destination 's3'" in run.error and "the secret key does not match" in run.error, run.error
    logged = dagster_text(instance, run.run_id)
    assert "DestinationError" in logged
    assert wrong not in run.error and wrong not in logged and wrong[:16] not in logged
    assert s3_server.keys(bucket) == []


def watch_then(server: MotoServer, bucket: str, action: Callable[[], None], seen: list[str]) -> threading.Thread:
    """Once two part files are visible on the server (listed past any relay), run `action`."""
    def watch() -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and len(seen) < 2:
            seen[:] = [key for key in server.keys(bucket) if "/part-" in key]
            time.sleep(0.01)
        action()

    thread = threading.Thread(target=watch)
    thread.start()
    return thread


def test_connection_cut_mid_export_then_rerun(fresh_s3_server: MotoServer, lake_root: Path, instance,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """Every connection to S3 is cut once the first part files land: the run fails and the server (which keeps its
    state) shows no manifest; a rerun of the window leaves exactly one set of files and a manifest."""
    server = fresh_s3_server
    bucket = server.create_bucket()
    relay = TcpRelay(server.port).start()
    use_keys(monkeypatch, server.writer)
    config = s3_config(bucket, relay.endpoint_url, max_rows_per_file=4)
    seen: list[str] = []
    watcher = watch_then(server, bucket, relay.cut, seen)
    failed = run_export(config, lake_root, dataflow="to-s3", export_time=EXPORT_TIME, instance=instance)
    watcher.join()
    assert len(seen) >= 2 and not failed.success and failed.error is not None
    assert "destination 's3'" in failed.error and "could not be reached" in failed.error, failed.error
    left = server.keys(bucket)
    assert left and not [key for key in left if "/manifest-" in key]

    relay.start()
    rerun = run_export(config, lake_root, dataflow="to-s3", export_time=EXPORT_TIME, instance=instance)
    assert rerun.success, rerun.error
    expected = sorted(f"exports/ajo/{key}" for slug in (FEEDBACK, STEPS)
                      for key in [*rerun.exports[slug]["keys"], rerun.exports[slug]["manifest_key"]])
    assert server.keys(bucket) == expected
    assert all(passed for passed, _ in rerun.checks.values()), rerun.checks


def test_server_killed_mid_export_then_rerun(fresh_s3_server: MotoServer, lake_root: Path, instance,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """The moto process is killed once the first part files land: the run fails as unreachable; after a restart
    (moto keeps no state across one) the rerun delivers exactly one set of files and a manifest."""
    server = fresh_s3_server
    bucket = server.create_bucket()
    use_keys(monkeypatch, server.writer)
    config = s3_config(bucket, server.endpoint_url, max_rows_per_file=4)
    seen: list[str] = []
    watcher = watch_then(server, bucket, server.stop, seen)
    failed = run_export(config, lake_root, dataflow="to-s3", export_time=EXPORT_TIME, instance=instance)
    watcher.join()
    assert len(seen) >= 2 and not failed.success and failed.error is not None
    assert "destination 's3'" in failed.error and "could not be reached" in failed.error, failed.error
    assert server.writer is not None and server.writer.secret_access_key not in failed.error

    server.start()
    server.create_bucket(bucket)
    use_keys(monkeypatch, server.writer)  # the restarted server provisioned new keys
    rerun = run_export(config, lake_root, dataflow="to-s3", export_time=EXPORT_TIME, instance=instance)
    assert rerun.success, rerun.error
    expected = sorted(f"exports/ajo/{key}" for slug in (FEEDBACK, STEPS)
                      for key in [*rerun.exports[slug]["keys"], rerun.exports[slug]["manifest_key"]])
    assert server.keys(bucket) == expected
    assert all(passed for passed, _ in rerun.checks.values()), rerun.checks
