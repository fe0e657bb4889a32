"""AEP's Data Landing Zone destination: Adobe's `dlz-destination` container, reached with a container SAS URL only.

No account key is anywhere on this path: the SAS URL is the whole credential (AEP hands it out as `SASUri`).
Files live for seven days; `purge_expired` enforces that retention and is run by a Dagster sensor.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qs, urlsplit

from ajo_exports.destinations.azure_blob import AzureBlobStorage, AzureTransferSettings
from ajo_exports.destinations.base import DestinationError

DLZ_CONTAINER = "dlz-destination"
RETENTION = timedelta(days=7)


class DataLandingZoneDestination(AzureTransferSettings):
    """The sandbox's DLZ destination container, addressed by its SAS URL (secret)."""

    sas_url: str

    @property
    def destination_type(self) -> str:
        return "data_landing_zone"

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
