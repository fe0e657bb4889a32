"""AEP's Data Landing Zone destination: Adobe's `dlz-destination` container, reached with a container SAS URL only.

No account key is anywhere on this path: the SAS URL is the whole credential (AEP hands it out as `SASUri`).
Files live for seven days; `purge_expired` enforces that retention and is run by a Dagster sensor.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Literal
from urllib.parse import parse_qs, urlsplit

from pydantic import model_validator

from ajo_exports.destinations.azure_blob import AzureBlobStorage, AzureTransferSettings
from ajo_exports.destinations.base import DestinationError
from ajo_exports.settings import Secret

DLZ_CONTAINER = "dlz-destination"
RETENTION = timedelta(days=7)


class DataLandingZoneDestinationConfig(AzureTransferSettings):
    """The sandbox's DLZ destination container, addressed by its SAS URL (secret)."""

    aep_connection_spec = "10440537-2a7b-4583-ac39-ed38d4b848e8"
    type: Literal["data_landing_zone"]
    sas_url: Secret
    """The dlz-destination container's SAS URL, as `${VAR}` (AEP hands it out as SASUri)."""

    @model_validator(mode="after")
    def _no_pgp(self) -> DataLandingZoneDestinationConfig:
        if self.pgp_public_key is not None:
            raise ValueError("the Data Landing Zone has no encryption option: remove pgp_public_key")
        return self

    @property
    def location(self) -> str:
        return f"data landing zone container {DLZ_CONTAINER}, folder /{self.folder}"

    def open_storage(self) -> AzureBlobStorage:
        from azure.storage.blob import ContainerClient  # the Azure SDK only when a destination is opened

        if "sig" not in parse_qs(urlsplit(self.sas_url).query):
            raise DestinationError(
                self.name, "connect",
                f"sas_url carries no SAS token (expected https://<account>.blob.core.windows.net/{DLZ_CONTAINER}?<token>)",
            )
        client = ContainerClient.from_container_url(self.sas_url, **self.client_settings())
        if client.container_name != DLZ_CONTAINER:
            # The landing zone also has a source-side container (dlz-user-container): never write exports there.
            raise DestinationError(
                self.name, "connect", f"sas_url names container {client.container_name!r}, not {DLZ_CONTAINER!r}"
            )
        return AzureBlobStorage(
            self.name, client, self.folder, max_concurrency=self.max_concurrency, secrets=[self.sas_url]
        )


def purge_expired(storage: AzureBlobStorage, now: datetime, retention: timedelta = RETENTION) -> list[str]:
    """Delete every file under the storage's folder last modified at least `retention` before `now` (AEP's 7-day
    TTL) and return the deleted keys. Manifests go first, so a window stops looking complete before its parts vanish."""
    cutoff = (now if now.tzinfo else now.replace(tzinfo=UTC)) - retention
    expired = [stored.key for stored, modified in storage.listing() if modified <= cutoff]
    expired.sort(key=lambda key: (not key.rsplit("/", 1)[-1].startswith("manifest-"), key))
    for key in expired:
        storage.delete(key)
    return expired
