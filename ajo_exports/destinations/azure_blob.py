"""Azure Blob Storage: one Storage over a container, shared by the azure_blob, adls_gen2 and data_landing_zone
destinations, which differ only in how they authenticate.

Publishing streams the local file as blocks (`upload_blob(..., max_concurrency=N)`); the blob appears only when
the block list commits, so a key is complete or absent. The whole file's MD5 travels as Content-MD5 and comes back
from the service as the native checksum; every block carries its own transactional MD5 (`validate_content`).
"""

from __future__ import annotations

import base64
import hashlib
import io
import re
from collections.abc import Callable, Iterable
from datetime import datetime
from pathlib import Path
from typing import IO, TYPE_CHECKING, Literal, TypeVar
from urllib.parse import parse_qs, urlsplit, urlunsplit

from pydantic import Field, field_validator

from ajo_exports.destinations.base import DestinationError, DestinationSettings, Storage, StoredObject, join_key, retry
from ajo_exports.settings import Secret, check_azure_container

if TYPE_CHECKING:  # the Azure SDK is imported where it is used: loading definitions never pays for it
    from azure.core.exceptions import AzureError
    from azure.storage.blob import ContainerClient

T = TypeVar("T")
MiB = 1024 * 1024

# What each operation needs, in the words of a SAS token and of Azure RBAC, so a refusal says what to grant.
PERMISSIONS = {
    "list": "List Blobs: SAS permission 'l', role Storage Blob Data Reader",
    "read": "Get Blob: SAS permission 'r', role Storage Blob Data Reader",
    "write": "Put Block List: SAS permissions 'cw', role Storage Blob Data Contributor",
    "delete": "Delete Blob: SAS permission 'd', role Storage Blob Data Contributor",
}
TERMINAL_CODES = {
    "AuthenticationFailed": "the storage account rejected the credentials (check the key, SAS or service principal)",
    "AuthorizationFailure": "the storage account rejected the credentials or the network rule refused this client",
    "InvalidAuthenticationInfo": "the authentication information is malformed",
    "NoAuthenticationInformation": "the request carried no credentials",
    "AuthorizationPermissionMismatch": "the credential lacks this permission",
    "AuthorizationResourceTypeMismatch": "the SAS token does not cover this resource type",
    "AuthorizationServiceMismatch": "the SAS token does not cover the Blob service",
    "AuthorizationProtocolMismatch": "the SAS token does not allow this protocol",
    "AuthorizationSourceIPMismatch": "the SAS token does not allow this client address",
    "ContainerNotFound": "the container does not exist",
    "ContainerBeingDeleted": "the container is being deleted",
    "ResourceNotFound": "the storage account or path does not exist",
    "AccountIsDisabled": "the storage account is disabled",
}
TRANSIENT_CODES = {"ServerBusy", "ServiceUnavailable", "InternalError", "OperationTimedOut"}
# Anything that can carry a credential inside SDK text: URL query strings (SAS) and key=value secrets.
URL_QUERY = re.compile(r"(https?://[^\s?'\"<>]+)\?[^\s'\"<>]*")
SECRET_PAIR = re.compile(r"(?i)\b(sig|signature|accountkey|sharedaccesssignature|client_secret|password)=[^&;\s'\"<>]+")


def error_code(exc: BaseException) -> str | None:
    code = getattr(exc, "error_code", None)
    return getattr(code, "value", code)


def is_transient(exc: BaseException) -> bool:
    """Connection failures, throttling and 5xx are worth another try; refusals are not."""
    from azure.core.exceptions import HttpResponseError, IncompleteReadError, ServiceRequestError, ServiceResponseError

    if isinstance(exc, ServiceRequestError | ServiceResponseError | IncompleteReadError):
        return True
    if isinstance(exc, HttpResponseError):
        code = error_code(exc)
        if code in TERMINAL_CODES:
            return False
        status = exc.status_code or 0
        return code in TRANSIENT_CODES or status in (408, 429) or status >= 500
    return False


def scrub(text: str, secrets: Iterable[str] = ()) -> str:
    """SDK text with every URL query, key=value secret and known secret value removed."""
    for secret in sorted((s for s in secrets if s and len(s) >= 4), key=len, reverse=True):
        text = text.replace(secret, "***")
    text = URL_QUERY.sub(r"\1?***", text)
    return SECRET_PAIR.sub(lambda m: f"{m.group(1)}=***", text)


def plain_url(url: str) -> str:
    """A URL without its query string: what may be shown of a SAS URL."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, parts.path, "", "")).rstrip("/")


def file_md5(path: Path) -> bytes:
    with path.open("rb") as stream:
        return hashlib.file_digest(stream, "md5").digest()


def _md5(value: bytes | bytearray | None) -> str | None:
    return f"md5:{base64.b64encode(bytes(value)).decode()}" if value else None


class _BlobReader(io.RawIOBase):
    """A file-like view of a blob download that fetches chunk by chunk as it is read."""

    def __init__(self, downloader, on_error: Callable[[AzureError], DestinationError]):
        self._downloader = downloader
        self._on_error = on_error

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        from azure.core.exceptions import AzureError

        try:
            data = self._downloader.read(len(buffer))
        except AzureError as exc:
            error = self._on_error(exc)
        else:
            buffer[: len(data)] = data
            return len(data)
        raise error


class AzureBlobStorage(Storage):
    """A container (through any ContainerClient: shared key, SAS or service principal), rooted at `folder`."""

    def __init__(
        self,
        name: str,
        container: ContainerClient,
        folder: str = "",
        *,
        max_concurrency: int = 4,
        location: str | None = None,
        secrets: Iterable[str] = (),
    ):
        self.name = name
        self.container = container
        self.folder = folder.strip("/")
        self.max_concurrency = max_concurrency
        self._location = (location or plain_url(container.url)).rstrip("/")
        query = urlsplit(container.url).query  # a SAS token, when the client was built from a SAS URL
        account_key = getattr(container.credential, "account_key", "")
        self._secrets = [*secrets, query, *parse_qs(query).get("sig", []), account_key]

    def _blob(self, key: str) -> str:
        return join_key(self.folder, key)

    def refusal(self, operation: str, key: str, exc: BaseException) -> DestinationError:
        """The DestinationError for an SDK failure: which permission, what was refused, never a secret."""
        from azure.core.exceptions import ClientAuthenticationError, HttpResponseError

        action = f"{operation} {self.uri(key)}"
        code = error_code(exc)
        status = exc.status_code if isinstance(exc, HttpResponseError) else None
        if status:
            hint = TERMINAL_CODES.get(code or "", "")
            reason = f"{code or exc.reason} (HTTP {status})" + (f": {hint}" if hint else "")
        else:
            first_line = (str(exc).strip().splitlines() or [""])[0]
            reason = f"{type(exc).__name__}: {first_line}"
        if status in (401, 403) or isinstance(exc, ClientAuthenticationError):
            action += f" ({PERMISSIONS[operation]})"
        transient = is_transient(exc)
        if transient:
            reason += " (gave up after retrying)"
        return DestinationError(self.name, action, scrub(reason, self._secrets), transient=transient)

    def _call(self, operation: str, key: str, action: Callable[[], T]) -> T:
        from azure.core.exceptions import AzureError

        try:
            return retry(action, is_transient=is_transient, what=f"{self.name}: {operation} {self.uri(key)}")
        except AzureError as exc:
            error = self.refusal(operation, key, exc)
        raise error  # outside the except block, so no SDK exception (with its URLs) rides along as context

    def publish(self, local_path: Path, key: str) -> StoredObject:
        from azure.storage.blob import ContentSettings

        size = local_path.stat().st_size
        settings = ContentSettings(content_md5=bytearray(file_md5(local_path)))
        blob = self.container.get_blob_client(self._blob(key))

        def upload() -> None:
            with local_path.open("rb") as stream:
                blob.upload_blob(
                    stream, length=size, overwrite=True, max_concurrency=self.max_concurrency,
                    validate_content=True, content_settings=settings,
                )

        self._call("write", key, upload)
        stored = self.stat(key)
        if stored is None or stored.size != size:
            found = "missing" if stored is None else f"{stored.size} bytes"
            reason = f"after commit the blob is {found}, not {size} bytes"
            raise DestinationError(self.name, f"write {self.uri(key)}", reason, transient=True)
        return stored

    def listing(self, prefix: str = "") -> list[tuple[StoredObject, datetime]]:
        """Every blob under `prefix` with its last-modified time (what the DLZ's retention goes by)."""
        base = f"{self.folder}/" if self.folder else ""

        def run() -> list[tuple[StoredObject, datetime]]:
            found = []
            for blob in self.container.list_blobs(name_starts_with=base + prefix or None, include=["metadata"]):
                if (blob.metadata or {}).get("hdi_isfolder") == "true":
                    continue  # a directory of a hierarchical-namespace (ADLS Gen2) account, not a file
                stored = StoredObject(blob.name[len(base):], blob.size, _md5(blob.content_settings.content_md5))
                found.append((stored, blob.last_modified))
            return found

        return self._call("list", prefix, run)

    def list(self, prefix: str = "") -> list[StoredObject]:
        return [stored for stored, _ in self.listing(prefix)]

    def stat(self, key: str) -> StoredObject | None:
        from azure.core.exceptions import ResourceNotFoundError

        blob = self.container.get_blob_client(self._blob(key))

        def run() -> StoredObject | None:
            try:
                props = blob.get_blob_properties()
            except ResourceNotFoundError as exc:
                if error_code(exc) in ("BlobNotFound", None):
                    return None
                raise
            return StoredObject(key, props.size, _md5(props.content_settings.content_md5))

        return self._call("read", key, run)

    def open_read(self, key: str) -> IO[bytes]:
        blob = self.container.get_blob_client(self._blob(key))
        downloader = self._call("read", key, blob.download_blob)
        return io.BufferedReader(_BlobReader(downloader, lambda exc: self.refusal("read", key, exc)), buffer_size=MiB)

    def delete(self, key: str) -> None:
        from azure.core.exceptions import ResourceNotFoundError

        blob = self.container.get_blob_client(self._blob(key))

        def run() -> None:
            try:
                blob.delete_blob()
            except ResourceNotFoundError as exc:
                if error_code(exc) != "BlobNotFound":
                    raise

        self._call("delete", key, run)

    def uri(self, key: str = "") -> str:
        name = self._blob(key)
        return f"{self._location}/{name}" if name else self._location

    def sink_path(self, key: str = "") -> str:
        return "/" + self._blob(key)

    def close(self) -> None:
        self.container.close()
        close_credential = getattr(self.container.credential, "close", None)
        if callable(close_credential):
            close_credential()


class AzureTransferSettings(DestinationSettings):
    """Block-upload tuning shared by the Azure destinations: the defaults bound memory to max_block_size x
    max_concurrency; tests shrink blocks to exercise multi-block uploads. Operational, like max_concurrent_exports:
    left out of review and of the confirmed hash."""

    kind = "azure"
    max_block_size: int = Field(8 * MiB, ge=1024, exclude=True)
    """Bytes per uploaded block: memory is about max_block_size x max_concurrency."""
    max_single_put_size: int = Field(8 * MiB, ge=1024, exclude=True)
    """Files up to this size go in one Put Blob, larger ones as blocks."""
    max_concurrency: int = Field(4, ge=1, le=64, exclude=True)
    """Blocks uploaded at once per file."""

    def client_settings(self) -> dict[str, int]:
        """ContainerClient keywords. The SDK's own retry is off (its first backoff is 15 s and it logs nothing):
        `base.retry` is the one retry policy, as for every destination."""
        return {
            "max_block_size": self.max_block_size,
            "max_single_put_size": self.max_single_put_size,
            "max_single_get_size": self.max_block_size,
            "max_chunk_get_size": self.max_block_size,
            "retry_total": 0,
            "connection_timeout": 20,
            "read_timeout": 120,
        }


class AzureBlobDestinationConfig(AzureTransferSettings):
    """AEP's Azure Blob Storage destination: a connection string (secret) and a container.

    The client is built from the connection string with azure-storage-blob rather than through dagster-azure's
    `AzureBlobStorageResource`: that resource takes an account URL plus a key/SAS/default credential (no connection
    string, which is AEP's only auth for this destination) and passes no client settings, so block size, single-put
    size and retry policy could not be set.
    """

    aep_connection_spec = "6d6b59bf-fb58-4107-9064-4d246c0e5bb2"
    aep_auth_fields = {"connectionString": "connection_string"}
    type: Literal["azure_blob"]
    connection_string: Secret
    """The storage account's connection string, as `${VAR}` (AEP: connectionString)."""
    container: str
    """The blob container: 3-63 lowercase letters, digits and single hyphens."""

    @field_validator("container")
    @classmethod
    def _container(cls, value: str) -> str:
        return check_azure_container(value)

    @property
    def location(self) -> str:
        return f"azure blob container {self.container}, folder /{self.folder}"

    def open_storage(self) -> AzureBlobStorage:
        from azure.storage.blob import ContainerClient

        try:
            client = ContainerClient.from_connection_string(
                self.connection_string, self.container, **self.client_settings()
            )
        except ValueError:
            raise DestinationError(
                self.name, "connect", "connection_string is malformed (expected DefaultEndpointsProtocol=https;"
                "AccountName=<account>;AccountKey=<key>)",
            ) from None
        return AzureBlobStorage(
            self.name, client, self.folder, max_concurrency=self.max_concurrency, secrets=[self.connection_string],
        )
