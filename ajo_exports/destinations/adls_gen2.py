"""AEP's Azure Data Lake Storage Gen2 destination: an abfss:// URL and a service principal.

ADLS Gen2 accounts accept the Blob API on their Blob endpoint, so this destination writes through the shared
AzureBlobStorage (block upload, atomic commit, Content-MD5) with an Azure AD token. dagster-azure's ADLS2Resource
is not used: it hard-codes the dfs.core.windows.net endpoint and the DFS API, which no local emulator serves.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from pydantic import field_validator

from ajo_exports.destinations.azure_blob import AzureBlobStorage, AzureTransferSettings, scrub
from ajo_exports.destinations.base import DestinationError
from ajo_exports.settings import ABFSS_URL, Secret

if TYPE_CHECKING:  # the Azure SDK is imported where it is used: loading definitions never pays for it
    from azure.core.credentials import AzureNamedKeyCredential, TokenCredential


def parse_abfss(url: str) -> tuple[str, str]:
    """(container, account) of `abfss://<container>@<account>.dfs.core.windows.net`."""
    match = ABFSS_URL.match(url)
    if not match:
        raise ValueError(f"url {url!r} is not abfss://<container>@<account>.dfs.core.windows.net")
    return match.group("container"), match.group("account")


class AdlsGen2DestinationConfig(AzureTransferSettings):
    """Writes to `<container>` of `<account>` through `https://<account>.blob.core.windows.net` (or `blob_endpoint`)
    as the service principal `client_id` of `tenant`."""

    aep_connection_spec = "be2c3209-53bc-47e7-ab25-145db8b873e1"
    aep_auth_fields = {"url": "url", "tenant": "tenant", "servicePrincipalId": "client_id",
                       "servicePrincipalKey": "client_secret"}
    type: Literal["adls_gen2"]
    url: str
    """abfss://<container>@<account>.dfs.core.windows.net (AEP: url)."""
    tenant: str
    """The Azure AD tenant ID of the service principal (AEP: tenant)."""
    client_id: str
    """The service principal's application (client) ID (AEP: servicePrincipalId)."""
    client_secret: Secret
    """The service principal's secret, as `${VAR}` (AEP: servicePrincipalKey)."""
    blob_endpoint: str | None = None
    """The account's Blob endpoint; default https://<account>.blob.core.windows.net."""

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        if not ABFSS_URL.match(value):
            raise ValueError("url must be abfss://<container>@<account>.dfs.core.windows.net")
        return value

    @property
    def container(self) -> str:
        return parse_abfss(self.url)[0]

    @property
    def account(self) -> str:
        return parse_abfss(self.url)[1]

    @property
    def location(self) -> str:
        return f"{self.url.rstrip('/')}/{self.folder}"

    def account_url(self) -> str:
        _, account = parse_abfss(self.url)
        return (self.blob_endpoint or f"https://{account}.blob.core.windows.net").rstrip("/")

    def credential(self) -> TokenCredential | AzureNamedKeyCredential:
        """The service principal's credential (no network call until a token is needed).

        This method is the one test seam: Azurite takes no Azure AD token over plain http, so the end-to-end test
        subclasses these settings and returns the emulator's shared key here; everything else runs unchanged."""
        from azure.identity import ClientSecretCredential

        return ClientSecretCredential(self.tenant, self.client_id, self.client_secret)

    def open_storage(self) -> AzureBlobStorage:
        from azure.storage.blob import ContainerClient

        try:
            container, account = parse_abfss(self.url)
        except ValueError as exc:
            raise DestinationError(self.name, "connect", str(exc)) from None
        try:
            credential = self.credential()
            client = ContainerClient(self.account_url(), container, credential=credential, **self.client_settings())
        except ValueError as exc:  # an invalid tenant id, or a token credential over http
            reason = scrub(str(exc).splitlines()[0], [self.client_secret])
            raise DestinationError(self.name, f"connect to {self.account_url()}", reason) from None
        return AzureBlobStorage(
            self.name, client, self.folder, max_concurrency=self.max_concurrency,
            location=f"abfss://{container}@{account}.dfs.core.windows.net", secrets=[self.client_secret],
        )
