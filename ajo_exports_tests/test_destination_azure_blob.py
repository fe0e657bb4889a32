"""Azure Blob destination against a real Azurite: storage round trip, block upload, errors, and exports via Dagster."""

from __future__ import annotations

import base64
import hashlib
import os
import re
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
import yaml
from azure.core.exceptions import (
    AzureError,
    HttpResponseError,
    ResourceNotFoundError,
    ServiceRequestError,
    ServiceResponseError,
)
from azure.storage.blob import ContainerClient
from dagster import DagsterInstance

from ajo_exports.catalog import get_dataset
from ajo_exports.destinations.azure_blob import AzureBlobDestinationConfig, AzureBlobStorage, is_transient, scrub
from ajo_exports.destinations.base import DestinationError, join_key
from ajo_exports.destinations.resource import resource_class
from ajo_exports_tests.helpers import ExportRun, dagster_text, run_checks, run_export
from ajo_exports_tests.helpers import assert_delivered as delivered
from ajo_exports_tests.servers.azurite import Azurite

AzureBlobDestination = resource_class(AzureBlobDestinationConfig)

KiB = 1024
BLOCK = 256 * KiB


def blob_destination(server: Azurite, container: str, folder: str = "exports/ajo", **kwargs) -> AzureBlobDestination:
    settings = {"max_block_size": BLOCK, "max_single_put_size": BLOCK, "max_concurrency": 4} | kwargs
    return AzureBlobDestination(
        name="blob", connection_string=server.connection_string(), container=container, folder=folder, **settings
    )


def md5_b64(data: bytes) -> str:
    return base64.b64encode(hashlib.md5(data).digest()).decode()


def test_round_trip_with_exact_keys(azurite: Azurite, tmp_path: Path) -> None:
    container = azurite.create_container()
    part, manifest = tmp_path / "part", tmp_path / "manifest"
    part.write_bytes(b"parquet bytes" * 100)
    manifest.write_bytes(b'{"flowRunId": "r"}')
    with blob_destination(azurite, container.container_name).open_storage() as storage:
        stored = storage.publish(part, "ds1/exportTime=202611290200/part-00000-a-c000.gz.parquet")
        storage.publish(manifest, "ds1/exportTime=202611290200/manifest-d-r.json")
        storage.publish(part, "ds2/part-00000-b-c000.gz.parquet")

        assert blob_names(container) == [
            "exports/ajo/ds1/exportTime=202611290200/manifest-d-r.json",
            "exports/ajo/ds1/exportTime=202611290200/part-00000-a-c000.gz.parquet",
            "exports/ajo/ds2/part-00000-b-c000.gz.parquet",
        ]
        assert stored.size == 1300
        assert stored.native_checksum == f"md5:{md5_b64(part.read_bytes())}"
        props = container.get_blob_client("exports/ajo/ds2/part-00000-b-c000.gz.parquet").get_blob_properties()
        assert base64.b64encode(props.content_settings.content_md5).decode() == md5_b64(part.read_bytes())

        assert [o.key for o in storage.list("ds1/")] == [
            "ds1/exportTime=202611290200/manifest-d-r.json",
            "ds1/exportTime=202611290200/part-00000-a-c000.gz.parquet",
        ]
        assert [o.key for o in storage.list()][-1] == "ds2/part-00000-b-c000.gz.parquet"
        assert storage.stat("ds1/exportTime=202611290200/manifest-d-r.json").size == manifest.stat().st_size
        assert storage.stat("ds1/nothing-here") is None
        with pytest.raises(DestinationError, match=r"read .*ds1/nothing-here refused: BlobNotFound \(HTTP 404\)"):
            storage.open_read("ds1/nothing-here")
        assert storage.read_bytes("ds1/exportTime=202611290200/manifest-d-r.json") == b'{"flowRunId": "r"}'
        assert storage.uri("ds2/x") == f"{azurite.blob_endpoint}/{container.container_name}/exports/ajo/ds2/x"
        assert storage.sink_path("ds1/exportTime=202611290200") == "/exports/ajo/ds1/exportTime=202611290200"

        storage.delete("ds2/part-00000-b-c000.gz.parquet")
        storage.delete("ds2/part-00000-b-c000.gz.parquet")  # deleting what is gone is not an error
        assert "exports/ajo/ds2/part-00000-b-c000.gz.parquet" not in blob_names(container)
        assert storage.stat("ds2/part-00000-b-c000.gz.parquet") is None


def test_storage_at_the_container_root(azurite: Azurite, tmp_path: Path) -> None:
    container = azurite.create_container()
    (tmp_path / "f").write_bytes(b"root")
    with blob_destination(azurite, container.container_name, folder="").open_storage() as storage:
        storage.publish(tmp_path / "f", "ds/part-00000-a-c000.gz.parquet")
        assert [o.key for o in storage.list()] == ["ds/part-00000-a-c000.gz.parquet"] == blob_names(container)
        assert storage.sink_path("ds") == "/ds"
        assert storage.uri() == f"{azurite.blob_endpoint}/{container.container_name}"


def test_multi_block_upload_reads_back_identical(azurite: Azurite, tmp_path: Path) -> None:
    container = azurite.create_container()
    big = tmp_path / "big.bin"
    data = os.urandom(3 * 1024 * KiB + 12345)  # 13 blocks of 256 KiB
    big.write_bytes(data)
    with blob_destination(azurite, container.container_name).open_storage() as storage:
        stored = storage.publish(big, "big/part-00000-x-c000.gz.parquet")
        committed, uncommitted = container.get_blob_client(
            "exports/ajo/big/part-00000-x-c000.gz.parquet"
        ).get_block_list("all")
        assert len(committed) == 13 and not uncommitted
        assert {block.size for block in committed[:-1]} == {BLOCK}
        assert stored.size == len(data) and stored.native_checksum == f"md5:{md5_b64(data)}"
        assert storage.sha256("big/part-00000-x-c000.gz.parquet") == hashlib.sha256(data).hexdigest()
        with storage.open_read("big/part-00000-x-c000.gz.parquet") as stream:
            assert stream.read(1000) == data[:1000]
            assert stream.read() == data[1000:]
    downloaded = container.download_blob("exports/ajo/big/part-00000-x-c000.gz.parquet").readall()
    assert hashlib.sha256(downloaded).digest() == hashlib.sha256(data).digest()


def test_wrong_key_is_terminal_and_names_no_secret(azurite: Azurite, tmp_path: Path) -> None:
    container = azurite.create_container()
    wrong_key = base64.b64encode(b"not the account key, but 64 bytes long to look like one......").decode()
    destination = AzureBlobDestination(
        name="blob", connection_string=azurite.connection_string(wrong_key), container=container.container_name
    )
    (tmp_path / "f").write_bytes(b"x")
    started = time.monotonic()
    with destination.open_storage() as storage:
        attempts = (lambda: storage.list(), lambda: storage.publish(tmp_path / "f", "k"), lambda: storage.delete("k"))
        for attempt in attempts:
            with pytest.raises(DestinationError) as caught:
                attempt()
            message = str(caught.value)
            assert not caught.value.transient
            assert message.startswith("destination 'blob': ")
            assert "AuthorizationFailure (HTTP 403)" in message
            assert wrong_key not in message and destination.connection_string not in message
            assert caught.value.__context__ is None and caught.value.__cause__ is None
    assert time.monotonic() - started < 5, "terminal errors are not retried"
    assert "list " in message or "delete " in message


def test_refusals_name_the_missing_permission(azurite: Azurite, tmp_path: Path) -> None:
    container = azurite.create_container()
    (tmp_path / "f").write_bytes(b"x")
    read_only = ContainerClient.from_container_url(azurite.container_sas_url(container.container_name, "rl"))
    with AzureBlobStorage("blob", read_only, "f") as storage:
        assert storage.list() == []
        with pytest.raises(DestinationError) as caught:
            storage.publish(tmp_path / "f", "k")
        message = str(caught.value)
        assert "write " in message and "Put Block List: SAS permissions 'cw'" in message
        assert "AuthorizationPermissionMismatch (HTTP 403)" in message
        assert "sig=" not in message and "?" not in message
    write_only = ContainerClient.from_container_url(azurite.container_sas_url(container.container_name, "cw"))
    with AzureBlobStorage("blob", write_only, "f") as storage, pytest.raises(DestinationError) as caught:
        storage.list()
    assert "list " in str(caught.value) and "List Blobs: SAS permission 'l'" in str(caught.value)


def test_missing_container_is_terminal(azurite: Azurite) -> None:
    storage = blob_destination(azurite, "no-such-container").open_storage()
    with storage, pytest.raises(DestinationError) as caught:
        storage.list()
    assert "ContainerNotFound (HTTP 404): the container does not exist" in str(caught.value)
    assert not caught.value.transient


def test_malformed_connection_string() -> None:
    destination = AzureBlobDestination(name="blob", connection_string="AccountKey=abcd-secret", container="c-1")
    with pytest.raises(DestinationError, match="connection_string is malformed") as caught:
        destination.open_storage()
    assert "abcd-secret" not in str(caught.value)


def test_scrub_removes_sas_and_keys() -> None:
    text = (
        "HTTPConnectionPool: Max retries exceeded with url: http://127.0.0.1:1/acct/c/b?sv=2024&sig=abc%2Bdef "
        "conn AccountKey=c2VjcmV0;BlobEndpoint=x and my-own-secret"
    )
    cleaned = scrub(text, ["my-own-secret"])
    assert "abc%2Bdef" not in cleaned and "c2VjcmV0" not in cleaned and "my-own-secret" not in cleaned
    assert "http://127.0.0.1:1/acct/c/b?***" in cleaned


@pytest.mark.parametrize(
    ("status", "code", "transient"),
    [(503, "ServerBusy", True), (503, "ServiceUnavailable", True), (500, "InternalError", True), (502, None, True),
     (429, None, True), (403, "AuthenticationFailed", False), (403, "AuthorizationPermissionMismatch", False),
     (404, "ContainerNotFound", False), (404, "ResourceNotFound", False), (400, "InvalidHeaderValue", False)],
)
def test_error_classification(status: int, code: str | None, transient: bool) -> None:
    error = HttpResponseError(message="refused")
    error.status_code, error.error_code = status, code
    assert is_transient(error) is transient
    assert is_transient(ServiceRequestError("connection refused")) and is_transient(ServiceResponseError("reset"))


def test_server_stopped_mid_upload_leaves_no_blob(azurite_private: Azurite, tmp_path: Path) -> None:
    """Blocks staged before the stop are never visible: the blob exists only once its block list commits."""
    container = azurite_private.create_container()
    big = tmp_path / "big.bin"
    data = os.urandom(24 * 1024 * KiB)
    big.write_bytes(data)
    name = "exports/ajo/big/part-00000-x-c000.gz.parquet"
    watcher = ContainerClient.from_connection_string(
        azurite_private.connection_string(), container.container_name, retry_total=0
    ).get_blob_client(name)

    staged: list[int] = []

    def stop_after_first_blocks() -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                staged.append(len(watcher.get_block_list("uncommitted")[1]))
                if staged[-1] >= 2:
                    break
            except ResourceNotFoundError:
                pass
            time.sleep(0.005)
        azurite_private.stop()

    with blob_destination(azurite_private, container.container_name, max_concurrency=1).open_storage() as storage:
        stopper = threading.Thread(target=stop_after_first_blocks)
        stopper.start()
        with pytest.raises(DestinationError) as caught:
            storage.publish(big, "big/part-00000-x-c000.gz.parquet")
        stopper.join()
        assert 2 <= staged[-1] < 96, "the server stopped while blocks were being staged"
        assert caught.value.transient
        assert "write " in str(caught.value)

        azurite_private.start()
        assert storage.stat("big/part-00000-x-c000.gz.parquet") is None
        assert blob_names(container) == []
        storage.publish(big, "big/part-00000-x-c000.gz.parquet")
        assert container.download_blob(name).readall() == data


# --- end to end through Dagster: the checks shared by the three Azure destinations' tests ----------------------

EXPORT_TIME = datetime(2026, 11, 29, 2, 0, tzinfo=UTC)
FEEDBACK, STEPS = "ajo_message_feedback_event_dataset", "journey_step_events"
def blob_names(container: ContainerClient, prefix: str = "") -> list[str]:
    return sorted(blob.name for blob in container.list_blobs(name_starts_with=prefix or None))


def assert_delivered(
    run: ExportRun, container: ContainerClient, folder: str, destination: str, lake_root: Path, slugs: list[str],
    export_time: datetime, scratch: Path,
) -> None:
    """The shared end-to-end assertions, listing and downloading with the Azure SDK; the native checksum is the
    service's Content-MD5."""

    def content_md5(name: str) -> str:
        md5 = container.get_blob_client(name).get_blob_properties().content_settings.content_md5
        return "md5:" + base64.b64encode(md5).decode()

    delivered(
        run, list_keys=lambda prefix: blob_names(container, prefix),
        download=lambda name: container.download_blob(name).readall(), native_checksum=content_md5, folder=folder,
        destination=destination, lake_root=lake_root, slugs=slugs, export_time=export_time, scratch=scratch,
    )


def check_names_deleted_and_corrupted(
    container: ContainerClient, folder: str, config: str, dataflow: str, lake_root: Path, instance: DagsterInstance,
) -> None:
    """Export two datasets, then flip a byte of one delivered part and delete another (with the SDK): the delivery
    checks fail, each naming its file."""
    run = run_export(config, lake_root, dataflow=dataflow, export_time=EXPORT_TIME, instance=instance)
    assert run.success and all(passed for passed, _ in run.checks.values()), (run.error, run.checks)
    first, second = list(run.exports)
    corrupted = join_key(folder, run.exports[first]["keys"][0])
    data = bytearray(container.download_blob(corrupted).readall())
    data[len(data) // 2] ^= 0xFF
    container.upload_blob(corrupted, bytes(data), overwrite=True)
    deleted = join_key(folder, run.exports[second]["keys"][-1])
    container.delete_blob(deleted)

    checks = run_checks(config, lake_root, dataflow=dataflow, instance=instance)
    passed, description = checks[first]
    assert not passed and corrupted.rsplit("/", 1)[1] in description and "sha256 expected" in description
    passed, description = checks[second]
    assert not passed and deleted.rsplit("/", 1)[1] in description and "missing" in description


def stop_mid_export_then_rerun(
    server: Azurite, container: ContainerClient, folder: str, config: str, dataflow: str, lake_root: Path,
    instance: DagsterInstance,
) -> None:
    """Stop the server once the first part files land (a thread watching with the SDK): the run fails and no manifest
    is visible after the restart; a rerun of the window leaves exactly one set of files and its manifests."""
    watcher = ContainerClient.from_connection_string(server.connection_string(), container.container_name,
                                                     retry_total=0)
    seen: list[str] = []

    def stop_after_first_parts() -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and len(seen) < 2:
            try:
                seen[:] = [name for name in blob_names(watcher) if "/part-" in name]
            except AzureError:
                pass
            time.sleep(0.01)
        server.stop()

    stopper = threading.Thread(target=stop_after_first_parts)
    stopper.start()
    failed = run_export(config, lake_root, dataflow=dataflow, export_time=EXPORT_TIME, instance=instance)
    stopper.join()
    assert len(seen) >= 2, "the server must stop in the middle of the export"
    assert not failed.success
    # the upload of a part file, or the read-back of its properties that follows it, met the stopped server
    assert re.search(r"(write|read) \S+/part-\d{5}-\S+ refused: .*Connection refused", failed.error), failed.error
    assert "gave up after retrying" in failed.error

    server.start()
    left = blob_names(container)
    assert not [name for name in left if "/manifest-" in name]
    assert [name for name in left if "/part-" in name], "the stopped run leaves strays (it could not withdraw them)"
    rerun = run_export(config, lake_root, dataflow=dataflow, export_time=EXPORT_TIME, instance=instance)
    assert rerun.success, rerun.error
    expected = sorted(
        join_key(folder, key) for item in rerun.exports.values() for key in [*item["keys"], item["manifest_key"]]
    )
    assert blob_names(container, folder) == expected
    assert all(passed for passed, _ in rerun.checks.values()), rerun.checks


# --- end to end: exports materialized through Dagster into Azurite -----------------------------------------------

SECRET_ENV = "AJO_TEST_AZURE_CONNECTION_STRING"


def blob_config(container: str, folder: str = "exports/ajo", **flow: object) -> str:
    return yaml.safe_dump({
        "destinations": [{"name": "blob", "type": "azure_blob", "connection_string": f"${{{SECRET_ENV}}}",
                          "container": container, "folder": folder}],
        "dataflows": [{"name": "to-blob", "destination": "blob", "datasets": [FEEDBACK, STEPS], **flow}],
    }, sort_keys=False)


def test_export_through_dagster(azurite: Azurite, lake_root: Path, instance, tmp_path: Path, monkeypatch) -> None:
    container = azurite.create_container()
    monkeypatch.setenv(SECRET_ENV, azurite.connection_string())
    run = run_export(blob_config(container.container_name), lake_root, dataflow="to-blob", export_time=EXPORT_TIME,
                     instance=instance)
    assert_delivered(run, container, "exports/ajo", "blob", lake_root, [FEEDBACK, STEPS], EXPORT_TIME, tmp_path)
    assert run.exports[FEEDBACK]["manifest_uri"].startswith(f"{azurite.blob_endpoint}/{container.container_name}/")
    assert {name.split("/")[2] for name in blob_names(container)} == {
        get_dataset(FEEDBACK).dataset_id, get_dataset(STEPS).dataset_id
    }


def test_check_names_a_deleted_and_a_corrupted_file(
    azurite: Azurite, lake_root: Path, instance, monkeypatch
) -> None:
    container = azurite.create_container()
    monkeypatch.setenv(SECRET_ENV, azurite.connection_string())
    config = blob_config(container.container_name, max_rows_per_file=100)
    check_names_deleted_and_corrupted(container, "exports/ajo", config, "to-blob", lake_root, instance)


def test_wrong_key_fails_the_run_without_leaking_it(
    azurite: Azurite, lake_root: Path, instance, monkeypatch
) -> None:
    container = azurite.create_container()
    wrong_key = base64.b64encode(b"a wrong account key for the emulator, long enough to look real!").decode()
    monkeypatch.setenv(SECRET_ENV, azurite.connection_string(wrong_key))
    run = run_export(blob_config(container.container_name), lake_root, dataflow="to-blob", export_time=EXPORT_TIME,
                     instance=instance)
    assert not run.success
    assert "destination 'blob'" in run.error and "AuthorizationFailure (HTTP 403)" in run.error, run.error
    logged = dagster_text(instance, run.run_id)
    assert "DestinationError" in logged
    for secret in (wrong_key, azurite.connection_string(wrong_key), wrong_key[:20]):
        assert secret not in run.error and secret not in logged
    assert blob_names(container) == []


def test_server_stopped_mid_export_then_rerun(azurite_private: Azurite, lake_root: Path, instance, monkeypatch) -> None:
    container = azurite_private.create_container()
    monkeypatch.setenv(SECRET_ENV, azurite_private.connection_string())
    config = blob_config(container.container_name, max_rows_per_file=4)
    stop_mid_export_then_rerun(azurite_private, container, "exports/ajo", config, "to-blob", lake_root, instance)
