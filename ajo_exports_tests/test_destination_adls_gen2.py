"""ADLS Gen2 destination: URL parsing and the service-principal credential (no network), then the destination
itself against Azurite through `blob_endpoint`.

Azurite answers DFS calls with an empty 400 and takes no Azure AD token over http, so the Azurite runs use
`AzuriteAdlsGen2Destination`: the real resource with only `credential()` replaced by a shared-key credential whose
key is the configured `client_secret`. URL parsing, endpoint choice, block upload, checksums, error mapping and the
Dagster wiring are the production code; the e2e tests replace `credential()` on the destination's settings model,
so exports.yaml and definitions run unchanged.
"""

from __future__ import annotations

import base64
import os
from pathlib import Path

import pytest
import yaml
from azure.core.credentials import AzureNamedKeyCredential
from azure.identity import ClientSecretCredential

from ajo_exports.destinations.adls_gen2 import AdlsGen2DestinationConfig, parse_abfss
from ajo_exports.destinations.base import DestinationError
from ajo_exports.destinations.resource import resource_class
from ajo_exports_tests.helpers import run_export
from ajo_exports_tests.servers.azurite import ACCOUNT, Azurite
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

SECRET_ENV = "AJO_TEST_ADLS_CLIENT_SECRET"
TENANT = "11111111-2222-3333-4444-555555555555"
CLIENT_ID = "66666666-7777-8888-9999-000000000000"


AdlsGen2Destination = resource_class(AdlsGen2DestinationConfig)


def azurite_credential(self: AdlsGen2DestinationConfig) -> AzureNamedKeyCredential:
    """The test seam: Azurite's shared key (given as client_secret) instead of an Azure AD token."""
    return AzureNamedKeyCredential(parse_abfss(self.url)[1], self.client_secret)


class AzuriteAdlsGen2DestinationConfig(AdlsGen2DestinationConfig):
    credential = azurite_credential


AzuriteAdlsGen2Destination = resource_class(AzuriteAdlsGen2DestinationConfig)


def adls(server: Azurite, container: str, secret: str | None = None, **kwargs) -> AzuriteAdlsGen2Destination:
    return AzuriteAdlsGen2Destination(
        name="lake", url=f"abfss://{container}@{ACCOUNT}.dfs.core.windows.net", tenant=TENANT, client_id=CLIENT_ID,
        client_secret=secret or server.account_key, folder="landing", blob_endpoint=server.blob_endpoint, **kwargs,
    )


def test_url_parsing_and_endpoints() -> None:
    assert parse_abfss("abfss://exports@mylake01.dfs.core.windows.net") == ("exports", "mylake01")
    assert parse_abfss("abfss://exports@mylake01.dfs.core.windows.net/") == ("exports", "mylake01")
    for bad in ("https://mylake01.blob.core.windows.net/exports", "abfss://Exports@mylake01.dfs.core.windows.net",
                "abfss://exports@mylake01.blob.core.windows.net", "abfss://exports@my-lake.dfs.core.windows.net"):
        with pytest.raises(ValueError, match="abfss://<container>@<account>.dfs.core.windows.net"):
            parse_abfss(bad)
    resource = AdlsGen2Destination(name="lake", url="abfss://exports@mylake01.dfs.core.windows.net", tenant=TENANT,
                                   client_id=CLIENT_ID, client_secret="s3cr3t-value", folder="ajo")
    assert resource.settings().account_url() == "https://mylake01.blob.core.windows.net"
    edge = resource.model_copy(update={"blob_endpoint": "https://edge.example/"})
    assert edge.settings().account_url() == "https://edge.example"
    bad = resource.model_copy(update={"url": "abfss://exports@mylake01.blob.core.windows.net"})
    with pytest.raises(DestinationError, match="connect refused: url"):
        bad.open_storage()


def test_credential_is_the_tenants_service_principal() -> None:
    """Built, not used: no token is requested, so nothing leaves the machine."""
    resource = AdlsGen2Destination(name="lake", url="abfss://exports@mylake01.dfs.core.windows.net", tenant=TENANT,
                                   client_id=CLIENT_ID, client_secret="s3cr3t-value", folder="ajo")
    credential = resource.settings().credential()
    assert isinstance(credential, ClientSecretCredential)
    assert credential._tenant_id == TENANT and credential._client_id == CLIENT_ID
    assert credential._authority == "https://login.microsoftonline.com"
    with resource.open_storage() as storage:
        assert isinstance(storage.container.credential, ClientSecretCredential)
        assert storage.container.credential._client_id == CLIENT_ID
        assert storage.container.url == "https://mylake01.blob.core.windows.net/exports"
        assert storage.uri("ds/part-0") == "abfss://exports@mylake01.dfs.core.windows.net/ajo/ds/part-0"
        assert storage.sink_path("ds") == "/ajo/ds"


def test_service_principal_needs_https_and_a_valid_tenant(azurite: Azurite) -> None:
    resource = AdlsGen2Destination(
        name="lake", url=f"abfss://exports@{ACCOUNT}.dfs.core.windows.net", tenant=TENANT, client_id=CLIENT_ID,
        client_secret="s3cr3t-value", blob_endpoint=azurite.blob_endpoint,
    )
    with pytest.raises(DestinationError, match="Token credential is only supported with HTTPS") as caught:
        resource.open_storage()
    assert "s3cr3t-value" not in str(caught.value)
    with pytest.raises(DestinationError, match="connect to https://") as caught:
        resource.model_copy(update={"tenant": "not a tenant!", "blob_endpoint": None}).open_storage()
    assert "s3cr3t-value" not in str(caught.value)


def test_storage_round_trip_through_the_blob_endpoint(azurite: Azurite, tmp_path: Path) -> None:
    container = azurite.create_container()
    big, small = tmp_path / "big", tmp_path / "small"
    data = os.urandom(1024 * 1024 + 7)
    big.write_bytes(data)
    small.write_bytes(b"{}")
    destination = adls(azurite, container.container_name, max_block_size=128 * 1024, max_single_put_size=128 * 1024)
    with destination.open_storage() as storage:
        stored = storage.publish(big, "ds/part-00000-x-c000.gz.parquet")
        storage.publish(small, "ds/manifest-x.json")
        # A hierarchical-namespace account lists its directories as empty blobs marked hdi_isfolder: not files.
        container.upload_blob("landing/ds", b"", metadata={"hdi_isfolder": "true"})
        assert blob_names(container) == [
            "landing/ds", "landing/ds/manifest-x.json", "landing/ds/part-00000-x-c000.gz.parquet"
        ]
        committed, _ = container.get_blob_client("landing/ds/part-00000-x-c000.gz.parquet").get_block_list()
        assert len(committed) == 9
        assert [o.key for o in storage.list("ds/")] == ["ds/manifest-x.json", "ds/part-00000-x-c000.gz.parquet"]
        assert stored.size == len(data) and stored.native_checksum.startswith("md5:")
        assert storage.read_bytes("ds/part-00000-x-c000.gz.parquet") == data
        storage.delete("ds/manifest-x.json")
        storage.delete("ds/manifest-x.json")
        assert storage.stat("ds/manifest-x.json") is None
        assert blob_names(container) == ["landing/ds", "landing/ds/part-00000-x-c000.gz.parquet"]
        assert [o.key for o in storage.list()] == ["ds/part-00000-x-c000.gz.parquet"]


def adls_config(server: Azurite, container: str, **flow: object) -> str:
    return yaml.safe_dump({
        "destinations": [{
            "name": "lake", "type": "adls_gen2", "url": f"abfss://{container}@{ACCOUNT}.dfs.core.windows.net",
            "tenant": TENANT, "client_id": CLIENT_ID, "client_secret": f"${{{SECRET_ENV}}}", "folder": "landing/ajo",
            "blob_endpoint": server.blob_endpoint,
        }],
        "dataflows": [{"name": "to-lake", "destination": "lake", "datasets": [FEEDBACK, STEPS], **flow}],
    }, sort_keys=False)


@pytest.fixture
def seam(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(AdlsGen2DestinationConfig, "credential", azurite_credential)


@pytest.mark.usefixtures("seam")
def test_export_through_dagster(azurite: Azurite, lake_root: Path, instance, tmp_path: Path, monkeypatch) -> None:
    container = azurite.create_container()
    monkeypatch.setenv(SECRET_ENV, azurite.account_key)
    run = run_export(adls_config(azurite, container.container_name), lake_root, dataflow="to-lake",
                     export_time=EXPORT_TIME, instance=instance)
    assert_delivered(run, container, "landing/ajo", "lake", lake_root, [FEEDBACK, STEPS], EXPORT_TIME, tmp_path)
    abfss = f"abfss://{container.container_name}@{ACCOUNT}.dfs.core.windows.net/landing/ajo/"
    assert run.exports[STEPS]["manifest_uri"].startswith(abfss)


@pytest.mark.usefixtures("seam")
def test_check_names_a_deleted_and_a_corrupted_file(azurite: Azurite, lake_root: Path, instance, monkeypatch) -> None:
    container = azurite.create_container()
    monkeypatch.setenv(SECRET_ENV, azurite.account_key)
    config = adls_config(azurite, container.container_name, max_rows_per_file=100)
    check_names_deleted_and_corrupted(container, "landing/ajo", config, "to-lake", lake_root, instance)


@pytest.mark.usefixtures("seam")
def test_wrong_secret_fails_the_run_without_leaking_it(
    azurite: Azurite, lake_root: Path, instance, monkeypatch
) -> None:
    container = azurite.create_container()
    wrong = base64.b64encode(b"the wrong secret for this service principal, 64 bytes long....").decode()
    monkeypatch.setenv(SECRET_ENV, wrong)
    run = run_export(adls_config(azurite, container.container_name), lake_root, dataflow="to-lake",
                     export_time=EXPORT_TIME, instance=instance)
    assert not run.success
    assert "destination 'lake'" in run.error and "(HTTP 403)" in run.error, run.error
    logged = dagster_text(instance, run.run_id)
    assert wrong not in run.error and wrong not in logged and wrong[:16] not in logged
    assert blob_names(container) == []


@pytest.mark.usefixtures("seam")
def test_server_stopped_mid_export_then_rerun(azurite_private: Azurite, lake_root: Path, instance, monkeypatch) -> None:
    container = azurite_private.create_container()
    monkeypatch.setenv(SECRET_ENV, azurite_private.account_key)
    config = adls_config(azurite_private, container.container_name, max_rows_per_file=4)
    stop_mid_export_then_rerun(azurite_private, container, "landing/ajo", config, "to-lake", lake_root, instance)
