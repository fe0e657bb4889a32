"""Google Cloud Storage, two ways in: AEP's HMAC keys over the S3-compatible XML API, or a service account
over the JSON API.

Either way a GCS object is visible only once its upload finalizes (a single request, a completed XML multipart
upload, or the last chunk of a resumable upload), so files go straight to their key.

Service-account keys are for Google; local emulators accept no key. For those, `service_account_json` may be
the literal `{"type": "emulator"}` together with `endpoint_url`: the client then sends anonymous requests to that
endpoint only. Without `endpoint_url` that value is refused, so it can never send anonymous requests to Google.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Literal, TypeVar

from pydantic import field_validator, model_validator

from ajo_exports.destinations.amazon_s3 import S3Storage, s3_compatible_client
from ajo_exports.destinations.base import (
    CHUNK,
    DestinationError,
    DestinationSettings,
    Storage,
    StoredObject,
    join_key,
    retry,
)
from ajo_exports.settings import Secret, check_gcs_bucket

if TYPE_CHECKING:  # the Google SDK is imported where it is used: loading definitions never pays for it
    from google.auth.credentials import Credentials
    from google.cloud import storage

T = TypeVar("T")
XML_ENDPOINT = "https://storage.googleapis.com"
CHUNK_SIZE = 8 * 1024 * 1024  # resumable-upload chunk; GCS wants a multiple of 256 KiB
SCOPES = ["https://www.googleapis.com/auth/devstorage.read_write"]
PERMISSIONS = {
    "list": "list (storage.objects.list)",
    "write": "write (storage.objects.create)",
    "read": "read (storage.objects.get)",
    "delete": "delete (storage.objects.delete)",
}
EMULATOR = {"type": "emulator"}


class GcsInteropStorage(S3Storage):
    """HMAC keys over GCS's XML API: the S3 code path, with GCS's permission names and checksums.

    GCS's XML API does not take x-amz-checksum-* headers; it reports its own CRC32C in x-goog-hash instead."""

    scheme = "gs"
    permissions = PERMISSIONS
    upload_args: Mapping[str, str] = {}

    def native_checksum(self, head: Mapping[str, Any]) -> str | None:
        headers = head.get("ResponseMetadata", {}).get("HTTPHeaders", {})
        hashes = dict(part.strip().split("=", 1) for part in headers.get("x-goog-hash", "").split(",") if "=" in part)
        if "crc32c" in hashes:
            return f"crc32c:{hashes['crc32c']}"
        etag = str(head.get("ETag", "")).strip('"')
        if re.fullmatch(r"[0-9a-f]{32}", etag):  # a single-request upload's ETag is its MD5
            return "md5:" + base64.b64encode(bytes.fromhex(etag)).decode()
        return None


def is_transient(exc: BaseException) -> bool:
    """429/5xx, dropped connections and failed token fetches over the network are worth another attempt."""
    import requests
    from google.api_core import exceptions as api_exceptions
    from google.auth import exceptions as auth_exceptions

    if isinstance(exc, api_exceptions.GoogleAPICallError):
        return exc.code is not None and (exc.code == 429 or exc.code >= 500)
    return isinstance(exc, requests.ConnectionError | requests.Timeout | auth_exceptions.TransportError)


def refusal_reason(exc: BaseException) -> str:
    """A secret-free reason, in the user's words (the SDK's text is never shown)."""
    from google.api_core import exceptions as api_exceptions
    from google.auth import exceptions as auth_exceptions

    if isinstance(exc, auth_exceptions.RefreshError):
        return "the service account credentials were rejected by the token endpoint"
    if isinstance(exc, api_exceptions.GoogleAPICallError):
        known = {401: "the credentials were rejected", 403: "permission denied", 404: "the bucket does not exist"}
        if exc.code in known:
            return f"{known[exc.code]} (HTTP {exc.code})"
        if is_transient(exc):
            return f"the service is unavailable, gave up after retries (HTTP {exc.code})"
        return f"{type(exc).__name__} (HTTP {exc.code})"
    if is_transient(exc):
        return f"the endpoint could not be reached, gave up after retries ({type(exc).__name__})"
    return type(exc).__name__


def file_crc32c(path: Path) -> str:
    """Base64 CRC32C of a file, streamed: GCS checks it before it finalizes a resumable upload."""
    import google_crc32c

    checksum = google_crc32c.Checksum()
    with path.open("rb") as stream:
        for chunk in iter(lambda: stream.read(CHUNK), b""):
            checksum.update(chunk)
    return base64.b64encode(checksum.digest()).decode()


class GcsStorage(Storage):
    """A bucket and folder over the JSON API. SDK retries are off: `retry` owns them, with one policy."""

    def __init__(
        self, name: str, client: storage.Client, bucket: str, folder: str = "", *, chunk_size: int = CHUNK_SIZE
    ):
        self.name = name
        self.client = client
        self.bucket = client.bucket(bucket)
        self.folder = folder.strip("/")
        self.chunk_size = chunk_size

    def _key(self, key: str) -> str:
        return join_key(self.folder, key)

    def _call(self, action: str, target: str, call: Callable[[], T]) -> T:
        import requests
        from google.api_core import exceptions as api_exceptions
        from google.auth import exceptions as auth_exceptions

        try:
            return retry(call, is_transient=is_transient, what=f"{self.name}: {action}")
        except (api_exceptions.GoogleAPICallError, auth_exceptions.GoogleAuthError, requests.RequestException) as exc:
            raise DestinationError(self.name, f"{PERMISSIONS[action]} of {self.uri(target)}", refusal_reason(exc),
                                   transient=is_transient(exc)) from None

    @staticmethod
    def _stored(key: str, blob: storage.Blob) -> StoredObject:
        checksum = f"crc32c:{blob.crc32c}" if blob.crc32c else f"md5:{blob.md5_hash}" if blob.md5_hash else None
        return StoredObject(key, int(blob.size or 0), checksum)

    def publish(self, local_path: Path, key: str) -> StoredObject:
        size = local_path.stat().st_size
        crc32c = file_crc32c(local_path)

        def upload() -> storage.Blob:
            blob = self.bucket.blob(self._key(key), chunk_size=self.chunk_size)
            blob.upload_from_filename(str(local_path), checksum="crc32c", crc32c_checksum_value=crc32c, retry=None)
            return blob

        blob = self._call("write", key, upload)
        if blob.size != size or blob.crc32c != crc32c:
            raise DestinationError(self.name, f"{PERMISSIONS['write']} of {self.uri(key)}",
                                   "the stored object does not match the uploaded file")
        return self._stored(key, blob)

    def list(self, prefix: str = "") -> list[StoredObject]:
        base = f"{self.folder}/" if self.folder else ""

        def page_through() -> list[StoredObject]:
            blobs = self.client.list_blobs(self.bucket, prefix=base + prefix, retry=None)
            return [self._stored(blob.name[len(base):], blob) for blob in blobs if not blob.name.endswith("/")]

        return sorted(self._call("list", prefix, page_through), key=lambda obj: obj.key)

    def stat(self, key: str) -> StoredObject | None:
        blob = self._call("read", key, lambda: self.bucket.get_blob(self._key(key), retry=None))
        return None if blob is None else self._stored(key, blob)

    def open_read(self, key: str) -> IO[bytes]:
        blob = self._call("read", key, lambda: self.bucket.get_blob(self._key(key), retry=None))
        if blob is None:
            raise DestinationError(self.name, f"read {self.uri(key)}", "no such object")
        # the generation pins the reader to this version; chunks are fetched as the caller reads
        return blob.open("rb", chunk_size=self.chunk_size, retry=None)

    def delete(self, key: str) -> None:
        from google.api_core import exceptions as api_exceptions

        def remove() -> None:
            try:
                self.bucket.delete_blob(self._key(key), retry=None)
            except api_exceptions.NotFound:
                pass

        self._call("delete", key, remove)

    def uri(self, key: str = "") -> str:
        return f"gs://{join_key(self.bucket.name, self._key(key))}"

    def sink_path(self, key: str = "") -> str:
        return "/" + self._key(key)

    def close(self) -> None:
        self.client.close()


class GoogleCloudStorageDestinationConfig(DestinationSettings):
    """A GCS bucket: HMAC keys (AEP's way, XML API) or a service account key (JSON API, resumable uploads)."""

    aep_connection_spec = "c5d93acb-ea8b-4b14-8f53-02138444ae99"
    aep_auth_fields = {"accessKeyId": "hmac_access_key_id", "secretAccessKey": "hmac_secret"}
    kind = "gcs"
    type: Literal["google_cloud_storage"]
    bucket: str
    """The GCS bucket (AEP: bucketName)."""
    hmac_access_key_id: Secret | None = None
    """An HMAC key's access ID, as `${VAR}` (AEP: accessKeyId); XML API, as AEP uses."""
    hmac_secret: Secret | None = None
    """The HMAC key's secret, as `${VAR}` (AEP: secretAccessKey)."""
    service_account_json: Secret | None = None
    """A service account key's JSON, as `${VAR}`, instead of HMAC keys (JSON API, resumable uploads)."""
    endpoint_url: str | None = None
    """Another GCS endpoint (an emulator); default Google's."""
    project: str | None = None
    """The project for the JSON API; default the service account key's project_id."""

    @field_validator("bucket")
    @classmethod
    def _bucket(cls, value: str) -> str:
        return check_gcs_bucket(value)

    @model_validator(mode="after")
    def _auth(self) -> GoogleCloudStorageDestinationConfig:
        self.one_credential(("hmac_access_key_id", "hmac_secret"), "service_account_json")
        return self

    @property
    def location(self) -> str:
        return f"gs://{self.bucket}/{self.folder}"

    def open_storage(self) -> Storage:
        from google.cloud import storage

        if self.hmac_access_key_id and self.hmac_secret:
            client = s3_compatible_client(access_key_id=self.hmac_access_key_id, secret_access_key=self.hmac_secret,
                                          endpoint_url=self.endpoint_url or XML_ENDPOINT, region="auto")
            return GcsInteropStorage(self.name, client, self.bucket, self.folder)
        options = {"api_endpoint": self.endpoint_url} if self.endpoint_url else None
        credentials, project = self._credentials()
        client = storage.Client(project=project, credentials=credentials, client_options=options)
        return GcsStorage(self.name, client, self.bucket, self.folder)

    def _credentials(self) -> tuple[Credentials, str | None]:
        """Explicit credentials from the key (never Application Default Credentials or the metadata server)."""
        from google.auth.credentials import AnonymousCredentials
        from google.oauth2 import service_account

        action = "read the service account key (service_account_json)"
        if not self.service_account_json:
            raise DestinationError(self.name, action, "give hmac_access_key_id and hmac_secret, "
                                   "or service_account_json")
        try:
            info = json.loads(self.service_account_json)
        except ValueError:
            raise DestinationError(self.name, action, "the value is not JSON") from None
        if info == EMULATOR:
            if not self.endpoint_url:
                raise DestinationError(self.name, action, '{"type": "emulator"} needs endpoint_url (an emulator)')
            return AnonymousCredentials(), self.project
        if not isinstance(info, dict) or info.get("type") != "service_account":
            raise DestinationError(self.name, action,
                                   'the JSON is not a service account key ("type": "service_account")')
        try:
            credentials = service_account.Credentials.from_service_account_info(info, scopes=SCOPES)
        except (ValueError, KeyError, TypeError):
            reason = "the key lacks client_email, token_uri or a valid private_key"
            raise DestinationError(self.name, action, reason) from None
        return credentials, self.project or info.get("project_id")
