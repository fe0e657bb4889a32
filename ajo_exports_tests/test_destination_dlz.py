"""Data Landing Zone destination against Azurite: a container SAS URL only, the 7-day retention, exports via Dagster."""

from __future__ import annotations

import base64
import hashlib
import os
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import quote, urlsplit

import pytest
import yaml
from azure.core.exceptions import ResourceExistsError
from azure.storage.blob import ContainerClient

from ajo_exports.destinations.base import DestinationError, probe
from ajo_exports.destinations.data_landing_zone import DLZ_CONTAINER, DataLandingZoneDestinationConfig, purge_expired
from ajo_exports.destinations.resource import resource_class
from ajo_exports_tests.helpers import run_export
from ajo_exports_tests.servers.azurite import Azurite
from ajo_exports_tests.test_destination_azure_blob import (
    EXPORT_TIME,
    FEEDBACK,
    STEPS,
    assert_delivered,
    blob_names,
    check_names_deleted_and_corrupted,
    dagster_text,
    stop_mid_export_then_rerun,
)

DataLandingZoneDestination = resource_class(DataLandingZoneDestinationConfig)

SECRET_ENV = "AJO_TEST_DLZ_SAS_URL"


def landing_zone(server: Azurite) -> ContainerClient:
    """AEP's one DLZ destination container, created once per server (tests keep apart by folder)."""
    container = server.service().get_container_client(DLZ_CONTAINER)
    try:
        container.create_container()
    except ResourceExistsError:
        pass
    return container


def dlz(sas_url: str, folder: str, **kwargs) -> DataLandingZoneDestination:
    settings = {"max_block_size": 256 * 1024, "max_single_put_size": 256 * 1024} | kwargs
    return DataLandingZoneDestination(name="dlz", sas_url=sas_url, folder=folder, **settings)


FORGED_SIG = base64.b64encode(hashlib.sha256(b"not signed with the account key").digest()).decode()


def with_wrong_signature(sas_url: str) -> str:
    head, tail = sas_url.split("sig=", 1)
    rest = tail.partition("&")[2]
    return f"{head}sig={quote(FORGED_SIG, safe='')}" + (f"&{rest}" if rest else "")


def test_round_trip_with_a_sas_url_only(azurite: Azurite, tmp_path: Path) -> None:
    container = landing_zone(azurite)
    folder = f"rt-{uuid.uuid4().hex[:8]}"
    big = tmp_path / "big"
    data = os.urandom(2 * 1024 * 1024 + 3)
    big.write_bytes(data)
    with dlz(azurite.container_sas_url(DLZ_CONTAINER), folder).open_storage() as storage:
        assert storage.container.credential is None, "the SAS in the URL is the only credential"
        stored = storage.publish(big, "ds/exportTime=202611290200/part-00000-x-c000.gz.parquet")
        storage.put_bytes("ds/exportTime=202611290200/manifest-x.json", b"{}", tmp_path / "m")
        assert blob_names(container, folder) == [
            f"{folder}/ds/exportTime=202611290200/manifest-x.json",
            f"{folder}/ds/exportTime=202611290200/part-00000-x-c000.gz.parquet",
        ]
        committed, _ = container.get_blob_client(
            f"{folder}/ds/exportTime=202611290200/part-00000-x-c000.gz.parquet"
        ).get_block_list()
        assert len(committed) == 9
        assert stored.size == len(data)
        key = "ds/exportTime=202611290200/part-00000-x-c000.gz.parquet"
        assert storage.sha256(key) == hashlib.sha256(data).hexdigest()
        assert [o.key for o in storage.list("ds/")] == [
            "ds/exportTime=202611290200/manifest-x.json", "ds/exportTime=202611290200/part-00000-x-c000.gz.parquet"
        ]
        assert storage.uri("ds") == f"{azurite.blob_endpoint}/{DLZ_CONTAINER}/{folder}/ds"
        assert "sig=" not in storage.uri("ds")
        storage.delete("ds/exportTime=202611290200/manifest-x.json")
        storage.delete("ds/exportTime=202611290200/manifest-x.json")
        assert storage.stat("ds/exportTime=202611290200/manifest-x.json") is None
        assert blob_names(container, folder) == [f"{folder}/ds/exportTime=202611290200/part-00000-x-c000.gz.parquet"]


def test_sas_refusals_name_the_permission_and_never_the_token(azurite: Azurite, tmp_path: Path) -> None:
    landing_zone(azurite)
    (tmp_path / "f").write_bytes(b"x")
    read_only = azurite.container_sas_url(DLZ_CONTAINER, "rl")
    token = urlsplit(read_only).query
    with dlz(read_only, "ro").open_storage() as storage, pytest.raises(DestinationError) as caught:
        storage.publish(tmp_path / "f", "k")
    message = str(caught.value)
    assert "write " in message and "SAS permissions 'cw'" in message and "AuthorizationPermissionMismatch" in message
    assert token not in message and "sig=" not in message and not caught.value.transient

    forged = with_wrong_signature(azurite.container_sas_url(DLZ_CONTAINER))
    with dlz(forged, "x").open_storage() as storage, pytest.raises(DestinationError) as caught:
        storage.list()
    message = str(caught.value)
    assert "list " in message and "(HTTP 403)" in message and not caught.value.transient
    assert urlsplit(forged).query not in message
    assert FORGED_SIG not in message and quote(FORGED_SIG, safe="") not in message


def test_probe_with_a_full_sas(azurite: Azurite) -> None:
    container = landing_zone(azurite)
    folder = f"probe-{uuid.uuid4().hex[:8]}"
    with dlz(azurite.container_sas_url(DLZ_CONTAINER), folder).open_storage() as storage:
        steps = probe(storage)
    assert steps[0].startswith(f"write {azurite.blob_endpoint}/{DLZ_CONTAINER}/{folder}/_ajo_probe/")
    assert steps[1:] == ["list", "read", "delete"]
    assert blob_names(container, folder) == []


@pytest.mark.parametrize(
    ("permission", "refused"),
    [
        ("rl", "write ... (Put Block List: SAS permissions 'cw'"),
        ("cwl", "read ... (Get Blob: SAS permission 'r'"),
        ("racwd", "list ... (List Blobs: SAS permission 'l'"),
        ("racwl", "delete ... (Delete Blob: SAS permission 'd'"),
    ],
)
def test_probe_names_the_missing_sas_permission(azurite: Azurite, permission: str, refused: str) -> None:
    landing_zone(azurite)
    sas_url = azurite.container_sas_url(DLZ_CONTAINER, permission)
    with dlz(sas_url, "probe").open_storage() as storage, pytest.raises(DestinationError) as caught:
        probe(storage)
    operation, permission_text = refused.split(" ... ")
    message = str(caught.value)
    assert message.startswith(f"destination 'dlz': {operation} http://127.0.0.1:"), message
    assert permission_text in message and "AuthorizationPermissionMismatch (HTTP 403)" in message
    assert urlsplit(sas_url).query not in message and "sig=" not in message


def test_only_a_sas_url_to_the_dlz_container(azurite: Azurite) -> None:
    other = azurite.create_container()
    wrong_container = azurite.container_sas_url(other.container_name)
    with pytest.raises(DestinationError, match=f"names container '{other.container_name}', not 'dlz-destination'"):
        dlz(wrong_container, "x").open_storage()
    with pytest.raises(DestinationError, match="sas_url carries no SAS token") as caught:
        dlz(f"{azurite.blob_endpoint}/{DLZ_CONTAINER}", "x").open_storage()
    assert "sas_url carries" in str(caught.value)


def test_purge_expired_deletes_by_last_modified(azurite: Azurite, tmp_path: Path) -> None:
    container = landing_zone(azurite)
    folder = f"purge-{uuid.uuid4().hex[:8]}"
    container.upload_blob(f"outside-{folder}/keep.json", b"{}")  # outside the destination's folder: never touched
    with dlz(azurite.container_sas_url(DLZ_CONTAINER), folder).open_storage() as storage:
        storage.put_bytes("old/part-00000-a-c000.gz.parquet", b"a", tmp_path / "a")
        storage.put_bytes("old/manifest-a.json", b"{}", tmp_path / "b")
        time.sleep(1.1)  # last-modified has whole seconds
        storage.put_bytes("new/part-00000-b-c000.gz.parquet", b"b", tmp_path / "c")
        first_old = min(modified for stored, modified in storage.listing("old/"))
        old_time = max(modified for stored, modified in storage.listing("old/"))
        new_time = min(modified for stored, modified in storage.listing("new/"))
        assert new_time > old_time

        assert purge_expired(storage, now=first_old + timedelta(days=7) - timedelta(seconds=1)) == []
        deleted = purge_expired(storage, now=old_time + timedelta(days=7))
        assert deleted == ["old/manifest-a.json", "old/part-00000-a-c000.gz.parquet"], "manifest first"
        assert blob_names(container, folder) == [f"{folder}/new/part-00000-b-c000.gz.parquet"]
        assert purge_expired(storage, now=new_time, retention=timedelta(0)) == ["new/part-00000-b-c000.gz.parquet"]
        assert blob_names(container, folder) == []
    assert blob_names(container, f"outside-{folder}") == [f"outside-{folder}/keep.json"]


def dlz_config(folder: str, **flow: object) -> str:
    return yaml.safe_dump({
        "destinations": [{"name": "dlz", "type": "data_landing_zone", "sas_url": f"${{{SECRET_ENV}}}",
                          "folder": folder}],
        "dataflows": [{"name": "to-dlz", "destination": "dlz", "datasets": [FEEDBACK, STEPS], **flow}],
    }, sort_keys=False)


def test_export_through_dagster_then_retention(
    azurite: Azurite, lake_root: Path, instance, tmp_path: Path, monkeypatch
) -> None:
    container = landing_zone(azurite)
    folder = f"e2e-{uuid.uuid4().hex[:8]}"
    monkeypatch.setenv(SECRET_ENV, azurite.container_sas_url(DLZ_CONTAINER))
    run = run_export(dlz_config(folder), lake_root, dataflow="to-dlz", export_time=EXPORT_TIME, instance=instance)
    assert_delivered(run, container, folder, "dlz", lake_root, [FEEDBACK, STEPS], EXPORT_TIME, tmp_path)
    delivered = blob_names(container, folder)

    with dlz(azurite.container_sas_url(DLZ_CONTAINER), folder).open_storage() as storage:
        assert purge_expired(storage, now=EXPORT_TIME) == [], "nothing is older than seven days yet"
        deleted = purge_expired(storage, now=max(m for _, m in storage.listing()) + timedelta(days=7))
    assert sorted(f"{folder}/{key}" for key in deleted) == delivered
    assert all("manifest-" in key for key in deleted[:2]) and not any("manifest-" in key for key in deleted[2:])
    assert blob_names(container, folder) == []


def test_check_names_a_deleted_and_a_corrupted_file(azurite: Azurite, lake_root: Path, instance, monkeypatch) -> None:
    container = landing_zone(azurite)
    folder = f"chk-{uuid.uuid4().hex[:8]}"
    monkeypatch.setenv(SECRET_ENV, azurite.container_sas_url(DLZ_CONTAINER))
    config = dlz_config(folder, max_rows_per_file=100)
    check_names_deleted_and_corrupted(container, folder, config, "to-dlz", lake_root, instance)


def test_forged_sas_fails_the_run_without_leaking_it(azurite: Azurite, lake_root: Path, instance, monkeypatch) -> None:
    container = landing_zone(azurite)
    folder = f"bad-{uuid.uuid4().hex[:8]}"
    forged = with_wrong_signature(azurite.container_sas_url(DLZ_CONTAINER))
    monkeypatch.setenv(SECRET_ENV, forged)
    run = run_export(dlz_config(folder), lake_root, dataflow="to-dlz", export_time=EXPORT_TIME, instance=instance)
    assert not run.success
    assert "destination 'dlz'" in run.error and "(HTTP 403)" in run.error, run.error
    logged = dagster_text(instance, run.run_id)
    for secret in (forged, urlsplit(forged).query, FORGED_SIG, quote(FORGED_SIG, safe="")):
        assert secret not in run.error and secret not in logged
    assert blob_names(container, folder) == []


def test_server_stopped_mid_export_then_rerun(azurite_private: Azurite, lake_root: Path, instance, monkeypatch) -> None:
    container = landing_zone(azurite_private)
    monkeypatch.setenv(SECRET_ENV, azurite_private.container_sas_url(DLZ_CONTAINER))
    config = dlz_config("exports", max_rows_per_file=4)
    stop_mid_export_then_rerun(azurite_private, container, "exports", config, "to-dlz", lake_root, instance)


def test_retention_sensor_purges_and_records_what_it_deleted(
    azurite: Azurite, lake_root: Path, instance, monkeypatch
) -> None:
    from dagster import AssetKey, SensorResult, SkipReason, build_sensor_context

    from ajo_exports.catalog import get_dataset
    from ajo_exports.definitions import export_specs
    from ajo_exports.sensors import dlz_retention_sensor
    from ajo_exports_tests.helpers import parse_config

    container = landing_zone(azurite)
    folder = f"sensor-{uuid.uuid4().hex[:8]}"
    monkeypatch.setenv(SECRET_ENV, azurite.container_sas_url(DLZ_CONTAINER))
    run = run_export(dlz_config(folder), lake_root, dataflow="to-dlz", export_time=EXPORT_TIME, instance=instance)
    assert run.success, run.error
    delivered = blob_names(container, folder)
    config = parse_config(dlz_config(folder))
    specs = export_specs(config)
    today = dlz_retention_sensor(config, specs, clock=lambda: datetime.now(UTC))
    assert isinstance(today(build_sensor_context(instance=instance)), SkipReason)
    later = dlz_retention_sensor(config, specs, clock=lambda: datetime.now(UTC) + timedelta(days=7, minutes=5))
    result = later(build_sensor_context(instance=instance))
    assert isinstance(result, SensorResult)
    recorded = {event.asset_key: event.metadata["dlz_retention_deleted"].value for event in result.asset_events}
    assert set(recorded) == {AssetKey(["export", "to-dlz", FEEDBACK]), AssetKey(["export", "to-dlz", STEPS])}
    assert sorted(f"{folder}/{key}" for keys in recorded.values() for key in keys) == delivered
    for key in recorded[AssetKey(["export", "to-dlz", FEEDBACK])]:
        assert get_dataset(FEEDBACK).dataset_id in key
    assert blob_names(container, folder) == []
