"""Receiver-side verification: is a delivered export window complete, checked without Dagster and without the lake.

A receiver points this at what we report (a manifest URI or a window folder `.../<datasetId>/exportTime=.../`) and
it reads the store with the store's own SDK, as the receiver would: every file the manifest lists is there with the
listed size and sha256 (streamed, never whole in memory), each Parquet or NDJSON file holds the listed rows (PGP
files, `*.gpg`/`*.pgp`, are checked by size and sha256 only), totalRows is their sum, and nothing else is in the
window folder (unlisted files, other manifests, temporary upload files). `verify_delivery()` returns a
`DeliveryReport` for a receiver's own pipeline; `ajo-verify-delivery URI` (also `ajo-exports verify-delivery`)
exits 0 when complete, 1 with one line per problem, 2 for bad arguments or an unreachable store.

URIs (as `ajo-exports run` prints them under "files landed in" and in each export's metadata):
  s3://bucket/folder/...                       Amazon S3 (boto3)
  gs://bucket/folder/...                       Google Cloud Storage (google-cloud-storage; boto3 with HMAC keys)
  abfss://container@account.dfs.core.windows.net/folder/...   ADLS Gen2, read through its Blob endpoint
  https://account.blob.core.windows.net/container/folder/...  Azure Blob and the Data Landing Zone
  http://127.0.0.1:10000/devstoreaccount1/container/...       an emulator (path-style account)
  sftp://user@host:port/abs/path/...  (or /~/relative/path)   SFTP (paramiko), host key always verified
  file:///abs/path/...  or a plain path                       a local folder

Credentials come from a destination of exports.yaml (`--config PATH --destination NAME`, `${VAR}` secrets read
from the environment) or else from these environment variables:
  Amazon S3      AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN (optional), AWS_REGION
                 (default us-east-1), AWS_ENDPOINT_URL_S3 or AWS_ENDPOINT_URL (default https://s3.<region>.amazonaws.com)
  Azure          AZURE_STORAGE_CONNECTION_STRING, or AZURE_STORAGE_SAS_TOKEN (a SAS token, or AZURE_STORAGE_SAS_URL a
                 container SAS URL such as the DLZ's SASUri), or AZURE_STORAGE_KEY (the account key), or a service
                 principal AZURE_TENANT_ID, AZURE_CLIENT_ID, AZURE_CLIENT_SECRET
  GCS            GCS_HMAC_ACCESS_KEY_ID and GCS_HMAC_SECRET (XML API), or GCS_SERVICE_ACCOUNT_JSON (the key's JSON)
                 or GOOGLE_APPLICATION_CREDENTIALS (the key file's path); GCS_ENDPOINT_URL (default
                 https://storage.googleapis.com)
  SFTP           SFTP_PASSWORD or SFTP_PRIVATE_KEY (Base64 or PEM), and SFTP_KNOWN_HOSTS (lines or a file path) or
                 SFTP_HOST_KEY_FINGERPRINT (SHA256:...); SFTP_USERNAME when the URI names no user
Endpoints are always explicit (`--endpoint-url`, a destination's `endpoint_url`/`blob_endpoint`, or the service's
public one): no DefaultAzureCredential, no Application Default Credentials, no cloud metadata lookup.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import posixpath
import re
import stat as statmode
import struct
import sys
import zlib
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, NoReturn
from urllib.parse import parse_qs, unquote, urlsplit

from ajo_exports.config import ConfigError, config_path, load_config
from ajo_exports.export.manifest import ExportedFile, Manifest, is_manifest
from ajo_exports.settings import SecretRef

CHUNK = 1024 * 1024
FOOTER_TAIL = 16 * CHUNK  # the most of a Parquet file's end kept while hashing, to read its footer from
ENCRYPTED_SUFFIXES = (".gpg", ".pgp")
DEFAULT_GCS_ENDPOINT = "https://storage.googleapis.com"
TIMEOUT = 20
ENV_HELP = __doc__.split("Credentials come from", 1)[1].split("Endpoints are always", 1)[0]
URL_QUERY = re.compile(r"(https?://[^\s?'\"<>]+)\?[^\s'\"<>]*")
SECRET_PAIR = re.compile(r"(?i)\b(sig|signature|accountkey|sharedaccesssignature|client_secret|password)=[^&;\s'\"<>]+")


class ReceiverError(Exception):
    """A bad argument or a store that cannot be read: one line, exit status 2, never a secret."""


@dataclass
class DeliveryReport:
    """What a receiver learns about one delivered window; `complete` only when `problems` is empty."""

    uri: str
    complete: bool = False
    problems: list[str] = field(default_factory=list)
    manifests: list[str] = field(default_factory=list)  # URIs of the manifests checked
    files: int = 0  # listed files found intact
    rows: int = 0  # rows those files hold (counted; as listed for encrypted files)
    bytes: int = 0  # bytes of those files

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# -- stores: each reads with its own SDK, keys are full object names (or absolute paths) -------------------------


class Store:
    """The four reads verification needs, implemented per store with its vendor SDK."""

    secrets: list[str]

    def list(self, prefix: str) -> list[tuple[str, int]]:
        """(key, size) of every object under `prefix` (a folder, ending with '/'), recursively."""
        raise NotImplementedError

    def size(self, key: str) -> int | None:
        raise NotImplementedError

    def chunks(self, key: str) -> Iterator[bytes]:
        """The object's bytes in chunks of about CHUNK, streamed."""
        raise NotImplementedError

    def uri(self, key: str) -> str:
        raise NotImplementedError

    def close(self) -> None:  # noqa: B027 - most stores hold nothing to release
        """Release connections."""

    def read(self, key: str) -> bytes:
        return b"".join(self.chunks(key))

    def reason(self, exc: BaseException) -> str:
        """A secret-free, one-line reason for an SDK failure."""
        return type(exc).__name__


def scrub(text: str, secrets: list[str]) -> str:
    """SDK text without known secrets, URL query strings (SAS tokens) or key=value secrets."""
    for secret in sorted((s for s in secrets if s and len(s) >= 4), key=len, reverse=True):
        text = text.replace(secret, "***")
    text = URL_QUERY.sub(r"\1?***", text)
    return SECRET_PAIR.sub(lambda m: f"{m.group(1)}=***", text)


class LocalStore(Store):
    secrets: list[str] = []

    def list(self, prefix: str) -> list[tuple[str, int]]:
        found = []
        for root, _, names in os.walk(prefix):
            for name in names:
                path = os.path.join(root, name)
                found.append((path, os.stat(path).st_size))
        return sorted(found)

    def size(self, key: str) -> int | None:
        return os.stat(key).st_size if os.path.isfile(key) else None

    def chunks(self, key: str) -> Iterator[bytes]:
        with open(key, "rb") as stream:
            yield from iter(lambda: stream.read(CHUNK), b"")

    def uri(self, key: str) -> str:
        return Path(key).as_uri()

    def reason(self, exc: BaseException) -> str:
        return exc.strerror if isinstance(exc, OSError) and exc.strerror else type(exc).__name__


class S3Store(Store):
    """S3, and GCS's S3-compatible XML API with HMAC keys (`scheme` gs)."""

    def __init__(self, client: Any, bucket: str, scheme: str, secrets: list[str]):
        self.client, self.bucket, self.scheme, self.secrets = client, bucket, scheme, secrets

    def list(self, prefix: str) -> list[tuple[str, int]]:
        pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix)
        return sorted((o["Key"], o["Size"]) for p in pages for o in p.get("Contents", []) if not o["Key"].endswith("/"))

    def size(self, key: str) -> int | None:
        from botocore.exceptions import ClientError

        try:
            return self.client.head_object(Bucket=self.bucket, Key=key)["ContentLength"]
        except ClientError as exc:
            if exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") == 404:
                return None
            raise

    def chunks(self, key: str) -> Iterator[bytes]:
        body = self.client.get_object(Bucket=self.bucket, Key=key)["Body"]
        try:
            yield from body.iter_chunks(CHUNK)
        finally:
            body.close()

    def uri(self, key: str) -> str:
        return f"{self.scheme}://{self.bucket}/{key}"

    def reason(self, exc: BaseException) -> str:
        from botocore.exceptions import ClientError, EndpointConnectionError, NoCredentialsError

        if isinstance(exc, ClientError):
            code = exc.response.get("Error", {}).get("Code", "error")
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            return f"{code} (HTTP {status})"
        if isinstance(exc, EndpointConnectionError):
            return "the endpoint could not be reached"
        if isinstance(exc, NoCredentialsError):
            return "no credentials"
        return type(exc).__name__

    def close(self) -> None:
        self.client.close()


class AzureStore(Store):
    """A Blob container (Azure Blob, ADLS Gen2's Blob endpoint, the Data Landing Zone)."""

    def __init__(self, container: Any, display: str, secrets: list[str]):
        self.container, self.display, self.secrets = container, display.rstrip("/"), secrets

    def list(self, prefix: str) -> list[tuple[str, int]]:
        found = []
        for blob in self.container.list_blobs(name_starts_with=prefix, include=["metadata"]):
            if (blob.metadata or {}).get("hdi_isfolder") != "true":  # a hierarchical namespace's directory
                found.append((blob.name, blob.size))
        return sorted(found)

    def size(self, key: str) -> int | None:
        from azure.core.exceptions import ResourceNotFoundError

        try:
            return self.container.get_blob_client(key).get_blob_properties().size
        except ResourceNotFoundError as exc:
            if getattr(exc, "error_code", None) in ("BlobNotFound", None):
                return None
            raise

    def chunks(self, key: str) -> Iterator[bytes]:
        yield from self.container.get_blob_client(key).download_blob(max_concurrency=1).chunks()

    def uri(self, key: str) -> str:
        return f"{self.display}/{key}"

    def reason(self, exc: BaseException) -> str:
        from azure.core.exceptions import HttpResponseError, ServiceRequestError

        if isinstance(exc, HttpResponseError) and exc.status_code:
            return f"{getattr(exc, 'error_code', None) or exc.reason} (HTTP {exc.status_code})"
        if isinstance(exc, ServiceRequestError):
            return "the endpoint could not be reached"
        first = (str(exc).strip().splitlines() or [""])[0]
        return scrub(f"{type(exc).__name__}: {first}"[:200], self.secrets)

    def close(self) -> None:
        self.container.close()


class GcsStore(Store):
    """A bucket over the JSON API."""

    def __init__(self, client: Any, bucket: str, secrets: list[str]):
        self.client, self.bucket, self.secrets = client, client.bucket(bucket), secrets

    def list(self, prefix: str) -> list[tuple[str, int]]:
        blobs = self.client.list_blobs(self.bucket, prefix=prefix, retry=None)
        return sorted((b.name, int(b.size or 0)) for b in blobs if not b.name.endswith("/"))

    def size(self, key: str) -> int | None:
        blob = self.bucket.get_blob(key, retry=None)
        return None if blob is None else int(blob.size or 0)

    def chunks(self, key: str) -> Iterator[bytes]:
        with self.bucket.blob(key).open("rb", chunk_size=CHUNK, retry=None) as stream:
            yield from iter(lambda: stream.read(CHUNK), b"")

    def uri(self, key: str) -> str:
        return f"gs://{self.bucket.name}/{key}"

    def reason(self, exc: BaseException) -> str:
        import requests
        from google.api_core import exceptions as api_exceptions

        if isinstance(exc, api_exceptions.GoogleAPICallError):
            return f"{type(exc).__name__} (HTTP {exc.code})"
        if isinstance(exc, requests.ConnectionError):
            return "the endpoint could not be reached"
        return type(exc).__name__

    def close(self) -> None:
        self.client.close()


class SftpStore(Store):
    """An SFTP server; keys are absolute paths."""

    def __init__(self, ssh: Any, display: str, secrets: list[str]):
        self.ssh, self.display, self.secrets = ssh, display, secrets
        self.sftp = ssh.open_sftp()
        self.sftp.get_channel().settimeout(TIMEOUT)

    def list(self, prefix: str) -> list[tuple[str, int]]:
        found, folders = [], [prefix.rstrip("/")]
        while folders:
            folder = folders.pop()
            try:
                entries = self.sftp.listdir_attr(folder)
            except FileNotFoundError:
                continue
            for entry in entries:
                path = f"{folder}/{entry.filename}"
                if statmode.S_ISDIR(entry.st_mode or 0):
                    folders.append(path)
                else:
                    found.append((path, entry.st_size or 0))
        return sorted(found)

    def size(self, key: str) -> int | None:
        try:
            attrs = self.sftp.stat(key)
        except FileNotFoundError:
            return None
        return attrs.st_size if statmode.S_ISREG(attrs.st_mode or 0) else None

    def chunks(self, key: str) -> Iterator[bytes]:
        with self.sftp.open(key, "rb") as stream:
            stream.prefetch()
            yield from iter(lambda: stream.read(CHUNK), b"")

    def uri(self, key: str) -> str:
        return f"{self.display}{key}"

    def reason(self, exc: BaseException) -> str:
        if isinstance(exc, PermissionError):
            return "permission denied"
        text = exc.strerror if isinstance(exc, OSError) and exc.strerror else type(exc).__name__
        return scrub(text, self.secrets)

    def close(self) -> None:
        self.sftp.close()
        self.ssh.close()


# -- where a URI points, and the credentials to read it ----------------------------------------------------------


@dataclass(frozen=True)
class Credentials:
    """What `--config/--destination` or the environment gives: plain values (secrets resolved), by field name."""

    values: dict[str, Any]
    endpoint_url: str | None = None
    destination_type: str | None = None

    def get(self, field_name: str) -> str | None:
        return self.values.get(field_name) or None

    @property
    def secrets(self) -> list[str]:
        return [str(v) for k, v in self.values.items() if v and k in SECRET_FIELDS]


SECRET_FIELDS = {"access_key_id", "secret_access_key", "connection_string", "sas_url", "client_secret", "hmac_secret",
                 "service_account_json", "password", "private_key", "session_token", "account_key", "sas_token"}
# environment variable of each credential field, read when no destination is given
ENV = {
    "access_key_id": "AWS_ACCESS_KEY_ID", "secret_access_key": "AWS_SECRET_ACCESS_KEY",
    "session_token": "AWS_SESSION_TOKEN", "connection_string": "AZURE_STORAGE_CONNECTION_STRING",
    "sas_url": "AZURE_STORAGE_SAS_URL", "sas_token": "AZURE_STORAGE_SAS_TOKEN", "account_key": "AZURE_STORAGE_KEY",
    "tenant": "AZURE_TENANT_ID", "client_id": "AZURE_CLIENT_ID", "client_secret": "AZURE_CLIENT_SECRET",
    "hmac_access_key_id": "GCS_HMAC_ACCESS_KEY_ID", "hmac_secret": "GCS_HMAC_SECRET",
    "service_account_json": "GCS_SERVICE_ACCOUNT_JSON", "password": "SFTP_PASSWORD", "private_key": "SFTP_PRIVATE_KEY",
    "known_hosts": "SFTP_KNOWN_HOSTS", "host_key_fingerprint": "SFTP_HOST_KEY_FINGERPRINT",
}
URI_TYPES = {
    "s3": ("amazon_s3",),
    "gs": ("google_cloud_storage",),
    "azure": ("azure_blob", "adls_gen2", "data_landing_zone"),
    "sftp": ("sftp",),
    "local": ("local",),
}


def credentials_from(config: Path | None, destination: str | None, endpoint_url: str | None) -> Credentials:
    """A destination entry's fields with `${VAR}` secrets read from the environment, or else the environment."""
    if config is None and destination is None:
        env = {name: os.environ.get(var) for name, var in ENV.items() if os.environ.get(var)}
        if not env.get("service_account_json") and os.environ.get("GOOGLE_APPLICATION_CREDENTIALS"):
            key_file = Path(os.environ["GOOGLE_APPLICATION_CREDENTIALS"])
            try:
                env["service_account_json"] = key_file.read_text()
            except OSError as exc:
                raise ReceiverError(f"GOOGLE_APPLICATION_CREDENTIALS: cannot read {key_file}: {exc.strerror}") from None
        env["s3_endpoint"] = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
        env["region"] = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
        env["gcs_endpoint"] = os.environ.get("GCS_ENDPOINT_URL")
        env["username"] = os.environ.get("SFTP_USERNAME")
        return Credentials(env, endpoint_url)
    try:
        exports = load_config(config or config_path())
        entry = exports.destination(destination) if destination else None
        if entry is None:
            if len(exports.destinations) != 1:
                names = ", ".join(d.name for d in exports.destinations)
                raise ReceiverError(f"--config names {len(exports.destinations)} destinations: pick one with "
                                    f"--destination ({names})")
            entry = exports.destinations[0]
    except ConfigError as exc:
        raise ReceiverError(str(exc)) from None
    values: dict[str, Any] = {}
    for name, value in entry:
        if isinstance(value, SecretRef):
            resolved = os.environ.get(value.env_var)
            if not resolved:
                raise ReceiverError(f"destination {entry.name!r}: {name} needs environment variable {value.env_var}")
            value = resolved
        values[name] = value
    endpoint = endpoint_url or values.get("endpoint_url") or values.get("blob_endpoint")
    return Credentials(values, endpoint, entry.type)


def split_uri(uri: str) -> tuple[str, str]:
    """(kind, the URI without a query): which store a URI names."""
    parts = urlsplit(uri)
    scheme = parts.scheme.lower()
    if scheme in ("s3", "gs", "sftp"):
        return scheme, uri
    if scheme == "abfss" or scheme in ("http", "https"):
        return "azure", uri
    if scheme == "file" or scheme == "" or (len(scheme) == 1 and os.name == "nt"):
        return "local", uri
    raise ReceiverError(f"{uri.split('?', 1)[0]}: unknown URI scheme {scheme!r} (s3, gs, abfss, https, sftp, file)")


def open_store(uri: str, creds: Credentials) -> tuple[Store, str]:
    """The store a URI names, opened with `creds`, and the path inside it (an object key or absolute path)."""
    kind, _ = split_uri(uri)
    if creds.destination_type and creds.destination_type not in URI_TYPES[kind]:
        raise ReceiverError(f"destination is of type {creds.destination_type}, but {uri.split('?', 1)[0]} is not")
    opener: dict[str, Callable[[str, Credentials], tuple[Store, str]]] = {
        "s3": _open_s3, "gs": _open_gcs, "azure": _open_azure, "sftp": _open_sftp, "local": _open_local,
    }
    return opener[kind](uri, creds)


def _open_local(uri: str, creds: Credentials) -> tuple[Store, str]:
    if creds.endpoint_url:
        raise ReceiverError("--endpoint-url does not apply to a local folder")
    path = unquote(urlsplit(uri).path) if uri.startswith("file:") else uri
    return LocalStore(), str(Path(path).expanduser().resolve())


def _bucket_and_key(uri: str) -> tuple[str, str]:
    parts = urlsplit(uri)
    if not parts.netloc:
        raise ReceiverError(f"{uri}: no bucket (expected {parts.scheme}://bucket/folder/...)")
    return parts.netloc, unquote(parts.path).lstrip("/")


def _s3_client(key_id: str, secret: str, token: str | None, endpoint: str, region: str) -> Any:
    import boto3
    from botocore.config import Config

    return boto3.session.Session().client(
        "s3", endpoint_url=endpoint, region_name=region, aws_access_key_id=key_id, aws_secret_access_key=secret,
        aws_session_token=token,
        config=Config(retries={"max_attempts": 2, "mode": "standard"}, connect_timeout=TIMEOUT, read_timeout=60,
                      request_checksum_calculation="when_required", response_checksum_validation="when_required"),
    )


def _open_s3(uri: str, creds: Credentials) -> tuple[Store, str]:
    bucket, key = _bucket_and_key(uri)
    key_id, secret = creds.get("access_key_id"), creds.get("secret_access_key")
    if creds.destination_type and not key_id:  # a role_arn destination: the receiver's own keys from the environment
        key_id, secret = os.environ.get("AWS_ACCESS_KEY_ID"), os.environ.get("AWS_SECRET_ACCESS_KEY")
    if not key_id or not secret:
        raise ReceiverError("s3:// needs AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or --config with a destination)")
    region = creds.get("region") or os.environ.get("AWS_REGION") or "us-east-1"
    endpoint = creds.endpoint_url or creds.get("s3_endpoint") or f"https://s3.{region}.amazonaws.com"
    token = creds.get("session_token") or (os.environ.get("AWS_SESSION_TOKEN") if creds.destination_type else None)
    client = _s3_client(key_id, secret, token, endpoint, region)
    return S3Store(client, bucket, "s3", [secret, token or ""]), key


def _open_gcs(uri: str, creds: Credentials) -> tuple[Store, str]:
    bucket, key = _bucket_and_key(uri)
    endpoint = (creds.endpoint_url or creds.get("gcs_endpoint") or DEFAULT_GCS_ENDPOINT).rstrip("/")
    hmac_id, hmac_secret = creds.get("hmac_access_key_id"), creds.get("hmac_secret")
    if hmac_id and hmac_secret:
        return S3Store(_s3_client(hmac_id, hmac_secret, None, endpoint, "auto"), bucket, "gs", [hmac_secret]), key
    key_json = creds.get("service_account_json")
    if not key_json:
        raise ReceiverError("gs:// needs GCS_HMAC_ACCESS_KEY_ID and GCS_HMAC_SECRET, GCS_SERVICE_ACCOUNT_JSON or "
                            "GOOGLE_APPLICATION_CREDENTIALS (or --config with a destination)")
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage
    from google.oauth2 import service_account

    try:
        info = json.loads(key_json)
    except ValueError:
        raise ReceiverError("the GCS service account key is not JSON") from None
    if info == {"type": "emulator"}:  # a local emulator only: anonymous requests to an explicit endpoint
        if endpoint == DEFAULT_GCS_ENDPOINT:
            raise ReceiverError('a {"type": "emulator"} key needs --endpoint-url (an emulator)')
        credentials, project = AnonymousCredentials(), "<none>"
    else:
        try:
            credentials = service_account.Credentials.from_service_account_info(
                info, scopes=["https://www.googleapis.com/auth/devstorage.read_only"]
            )
        except (ValueError, KeyError, TypeError, AttributeError):
            raise ReceiverError("the GCS service account key lacks client_email, token_uri or a private_key") from None
        project = creds.get("project") or info.get("project_id") or "<none>"
    client = storage.Client(project=project, credentials=credentials, client_options={"api_endpoint": endpoint})
    return GcsStore(client, bucket, [key_json]), key


def _azure_parts(uri: str, endpoint: str | None) -> tuple[str, str, str, str]:
    """(account URL, container, blob path, display prefix) of an abfss:// or http(s):// Blob URI."""
    parts = urlsplit(uri)
    path = unquote(parts.path).lstrip("/")
    if parts.scheme == "abfss":
        match = re.match(r"^(?P<container>[^@]+)@(?P<account>[a-z0-9]+)\.dfs\.core\.windows\.net$", parts.netloc)
        if not match:
            raise ReceiverError(f"{uri}: expected abfss://<container>@<account>.dfs.core.windows.net/...")
        account_url = (endpoint or f"https://{match['account']}.blob.core.windows.net").rstrip("/")
        return account_url, match["container"], path, f"abfss://{parts.netloc}"
    plain = f"{parts.scheme}://{parts.netloc}/{path}"
    if endpoint and plain.startswith(endpoint.rstrip("/") + "/"):
        account_url = endpoint.rstrip("/")
        rest = plain[len(account_url) + 1:]
    elif re.match(r"^(\d+\.\d+\.\d+\.\d+|localhost|\[[0-9a-f:]+\])(:\d+)?$", parts.netloc):
        account, _, rest = path.partition("/")  # an emulator: the account is the first path segment
        account_url = f"{parts.scheme}://{parts.netloc}/{account}"
    else:
        account_url, rest = f"{parts.scheme}://{parts.netloc}", path
    container, _, blob = rest.partition("/")
    if not container:
        raise ReceiverError(f"{plain}: no container (expected {account_url}/<container>/folder/...)")
    return account_url, container, blob, f"{account_url}/{container}"


def _open_azure(uri: str, creds: Credentials) -> tuple[Store, str]:
    from azure.storage.blob import BlobServiceClient, ContainerClient

    settings = {"retry_total": 1, "connection_timeout": TIMEOUT, "read_timeout": 60,
                "max_single_get_size": 4 * CHUNK, "max_chunk_get_size": 4 * CHUNK}
    query = urlsplit(uri).query
    connection_string = creds.get("connection_string")
    endpoint = creds.endpoint_url
    if connection_string and not endpoint:
        match = re.search(r"(?i)BlobEndpoint=([^;]+)", connection_string)
        endpoint = match.group(1) if match else None
    account_url, container, blob, display = _azure_parts(uri.split("?", 1)[0], endpoint)
    secrets = [query, *creds.secrets]
    try:
        if connection_string:
            service = BlobServiceClient.from_connection_string(connection_string, **settings)
            if service.url.rstrip("/") != account_url:
                raise ReceiverError(
                    f"the connection string is for {service.url.rstrip('/')}, the URI for {account_url}"
                )
            client = service.get_container_client(container)
        elif (sas_url := creds.get("sas_url")) or "sig" in parse_qs(query):
            url = sas_url or f"{display}?{query}"
            client = ContainerClient.from_container_url(url, **settings)
            if url.split("?", 1)[0].rstrip("/") != display:
                raise ReceiverError(f"the SAS URL is for {url.split('?', 1)[0]}, the URI names {display}")
        elif sas_token := creds.get("sas_token"):
            client = ContainerClient(account_url, container, credential=sas_token.lstrip("?"), **settings)
        elif account_key := creds.get("account_key"):
            from azure.core.credentials import AzureNamedKeyCredential

            account = urlsplit(account_url).path.strip("/") or urlsplit(account_url).netloc.split(".")[0]
            credential = AzureNamedKeyCredential(account, account_key)
            client = ContainerClient(account_url, container, credential=credential, **settings)
        elif creds.get("client_secret"):
            from azure.identity import ClientSecretCredential

            tenant, client_id = creds.get("tenant"), creds.get("client_id")
            if not tenant or not client_id:
                raise ReceiverError("a service principal needs AZURE_TENANT_ID, AZURE_CLIENT_ID, AZURE_CLIENT_SECRET")
            credential = ClientSecretCredential(tenant, client_id, creds.get("client_secret"))
            client = ContainerClient(account_url, container, credential=credential, **settings)
        else:
            raise ReceiverError("Azure needs AZURE_STORAGE_CONNECTION_STRING, AZURE_STORAGE_SAS_TOKEN, "
                                "AZURE_STORAGE_SAS_URL, AZURE_STORAGE_KEY or AZURE_CLIENT_SECRET (or --config)")
    except ValueError as exc:
        raise ReceiverError(f"Azure credentials: {scrub(str(exc).splitlines()[0], secrets)}") from None
    return AzureStore(client, display, secrets), blob


class _Fingerprint:
    """paramiko's host-key policy for a host not in known_hosts: accept only the expected SHA256 fingerprint."""

    def __init__(self, expected: str | None):
        self.expected = expected

    def missing_host_key(self, client: Any, hostname: str, key: Any) -> None:
        import hmac

        import paramiko

        wanted = "SHA256:" + (self.expected or "").strip().split(":", 1)[-1].rstrip("=")
        if not self.expected or not hmac.compare_digest(key.fingerprint.encode(), wanted.encode()):
            raise paramiko.SSHException(f"host key {key.get_name()} {key.fingerprint} of {hostname} is not known")


def _private_key(value: str) -> Any:
    import base64
    import io

    import paramiko

    text = value.strip()
    if "PRIVATE KEY" not in text:
        try:
            text = base64.b64decode("".join(text.split()), validate=True).decode("ascii")
        except ValueError:
            raise ReceiverError("the SFTP private key is not Base64 of a PEM/OpenSSH private key") from None
    for key_class in (paramiko.RSAKey, paramiko.Ed25519Key, paramiko.ECDSAKey):
        try:
            return key_class.from_private_key(io.StringIO(text))
        except (paramiko.SSHException, ValueError, TypeError, IndexError):
            continue
    raise ReceiverError("the SFTP private key is not an RSA, Ed25519 or ECDSA key without passphrase")


def _open_sftp(uri: str, creds: Credentials) -> tuple[Store, str]:
    import logging

    import paramiko

    if creds.endpoint_url:
        raise ReceiverError("--endpoint-url does not apply to sftp://")
    parts = urlsplit(uri)
    host, port = parts.hostname, parts.port or 22
    username = unquote(parts.username or "") or creds.get("username")
    if not host or not username:
        raise ReceiverError(f"{uri}: expected sftp://user@host:port/path (or set SFTP_USERNAME)")
    password, key = creds.get("password"), creds.get("private_key")
    known_hosts, fingerprint = creds.get("known_hosts"), creds.get("host_key_fingerprint")
    if not password and not key:
        raise ReceiverError("sftp:// needs SFTP_PASSWORD or SFTP_PRIVATE_KEY (or --config with a destination)")
    if not known_hosts and not fingerprint:
        raise ReceiverError("sftp:// needs SFTP_KNOWN_HOSTS or SFTP_HOST_KEY_FINGERPRINT: unknown hosts are refused")
    logging.getLogger("paramiko.transport").setLevel(logging.CRITICAL)
    ssh = paramiko.SSHClient()
    if known_hosts:
        text = known_hosts
        if len(known_hosts.split()) == 1:
            try:
                text = Path(known_hosts.strip()).expanduser().read_text()
            except OSError as exc:
                raise ReceiverError(f"cannot read known_hosts file {known_hosts.strip()}: {exc.strerror}") from None
        for number, line in enumerate(text.splitlines(), 1):
            if not line.strip() or line.lstrip().startswith(("#", "@")):
                continue
            try:
                entry = paramiko.hostkeys.HostKeyEntry.from_line(line.strip(), number)
            except (paramiko.SSHException, ValueError) as exc:
                raise ReceiverError(f"known_hosts line {number} is not '<hosts> <key type> <base64 key>'") from exc
            for name in entry.hostnames if entry and entry.key else ():
                ssh.get_host_keys().add(name, entry.key.get_name(), entry.key)
    ssh.set_missing_host_key_policy(_Fingerprint(None if known_hosts else fingerprint))
    secrets = [s for s in (password, key) if s]
    pkey = _private_key(key) if key else None
    display = f"sftp://{parts.username + '@' if parts.username else ''}{parts.netloc.rsplit('@', 1)[-1]}"
    try:
        ssh.connect(host, port, username=username, password=password or None,
                    pkey=pkey, allow_agent=False, look_for_keys=False,
                    timeout=TIMEOUT, banner_timeout=TIMEOUT, auth_timeout=TIMEOUT)
        store = SftpStore(ssh, display, secrets)
        path = unquote(parts.path) or "/"
        if path == "/~" or path.startswith("/~/"):  # curl's form for the login folder, as config locations write it
            path = posixpath.join(store.sftp.normalize("."), path[3:])
    except paramiko.AuthenticationException:
        ssh.close()
        raise ReceiverError(f"{display}: authentication failed for {username}") from None
    except (paramiko.SSHException, OSError) as exc:
        ssh.close()
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise ReceiverError(f"{display}: cannot connect: {scrub(reason, secrets)}") from None
    return store, posixpath.normpath(path)


# -- the checks ----------------------------------------------------------------------------------------------------


def is_encrypted(name: str) -> bool:
    return name.lower().endswith(ENCRYPTED_SUFFIXES)


def parquet_rows(tail: bytes) -> int:
    """Rows from a Parquet file's footer (the file's last bytes), without reading its data."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    if len(tail) < 12 or tail[-4:] != b"PAR1":
        raise ValueError("no Parquet footer")
    length = struct.unpack("<I", tail[-8:-4])[0]
    if length + 8 > len(tail):
        raise ValueError(f"footer of {length} bytes is larger than the {len(tail)} bytes kept")
    return pq.read_metadata(pa.BufferReader(b"PAR1" + tail[-(length + 8):])).num_rows


class _LineCounter:
    """Lines of gzip'd NDJSON (possibly several gzip members), decompressed in bounded steps."""

    def __init__(self) -> None:
        self.lines, self.last, self.inflate = 0, b"\n", zlib.decompressobj(31)

    def feed(self, data: bytes) -> None:
        while data:
            out = self.inflate.decompress(data, CHUNK)
            self._count(out)
            data = self.inflate.unconsumed_tail
            if self.inflate.eof:
                rest = self.inflate.unused_data + data
                self.inflate = zlib.decompressobj(31)
                data = rest

    def _count(self, out: bytes) -> None:
        if out:
            self.lines += out.count(b"\n")
            self.last = out[-1:]

    def finish(self) -> int:
        if not self.inflate.eof and self.inflate.flush():
            raise ValueError("truncated gzip stream")
        return self.lines + (0 if self.last == b"\n" else 1)


def check_file(store: Store, key: str, item: ExportedFile) -> tuple[list[str], int | None]:
    """Stream one listed file once: sha256 and (unless encrypted) its rows. Problems, and rows found."""
    digest = hashlib.sha256()
    kind = "encrypted" if is_encrypted(item.name) else "parquet" if item.name.endswith(".parquet") else (
        "ndjson" if item.name.endswith(".json.gz") else "other")
    kept: deque[bytes] = deque()  # the last chunks of a Parquet file, at least FOOTER_TAIL bytes when it has them
    kept_size, counter = 0, _LineCounter()
    for chunk in store.chunks(key):
        digest.update(chunk)
        if kind == "parquet":
            kept.append(chunk)
            kept_size += len(chunk)
            while kept_size - len(kept[0]) >= FOOTER_TAIL:
                kept_size -= len(kept.popleft())
        elif kind == "ndjson":
            try:
                counter.feed(chunk)
            except zlib.error:
                kind = "bad-gzip"
    found = digest.hexdigest()
    if found != item.sha256:
        return [f"{item.name}: sha256 expected {item.sha256}, found {found}"], None
    if kind in ("encrypted", "other"):
        return [], item.rows
    try:
        if kind == "bad-gzip":
            raise ValueError("not a gzip stream")
        rows = parquet_rows(b"".join(kept)) if kind == "parquet" else counter.finish()
    except (ValueError, OSError, zlib.error) as exc:
        what = "Parquet" if kind == "parquet" else "gzip'd NDJSON"
        return [f"{item.name}: expected {item.rows} rows, found a file not readable as {what} ({exc})"], None
    if rows != item.rows:
        return [f"{item.name}: rows expected {item.rows}, found {rows}"], rows
    return [], rows


def _stray(name: str) -> str:
    base = name.rsplit("/", 1)[-1]
    if base.startswith(".") or base.endswith(".part"):
        return f"{name}: a temporary upload file in the window folder (an export still running or interrupted)"
    if is_manifest(base):
        return f"{name}: another manifest in the window folder"
    return f"{name}: in the window folder but listed in no manifest"


def _verify(store: Store, path: str, report: DeliveryReport) -> None:
    folder, _, last = path.rstrip("/").rpartition("/")
    if is_manifest(last):
        manifests = [path]
        present = {key: size for key, size in store.list(folder + "/")}
        if path not in present:
            report.problems.append(f"{last}: the manifest is missing at {store.uri(path)}")
            manifests = []
    else:
        folder = path.rstrip("/")
        present = {key: size for key, size in store.list(folder + "/")}
        if not present and store.size(folder) is not None:
            raise ReceiverError(f"{store.uri(folder)} is a file, not a manifest (manifest-<destinationId>-<runId>.json)"
                                " or a window folder")
        manifests = sorted(k for k in present if "/" not in k[len(folder) + 1:] and is_manifest(k))
        if not present:
            report.problems.append(f"{store.uri(folder)}/: the window folder is empty or does not exist")
        elif not manifests:
            report.problems.append(f"{store.uri(folder)}/: no manifest (manifest-<destinationId>-<runId>.json) in "
                                   "the window folder: the export is incomplete or still running")
    covered = set(manifests)
    dataset_ids: set[str] = set()
    for key in manifests:
        report.manifests.append(store.uri(key))
        name = key[len(folder) + 1:]
        try:
            manifest = Manifest.from_json(store.read(key))
        except (ValueError, KeyError, TypeError) as exc:
            report.problems.append(f"{name}: not a valid manifest ({type(exc).__name__}: {str(exc)[:120]})")
            continue
        dataset_ids.add(manifest.datasetId)
        for item in manifest.exportResults:
            file_key = f"{folder}/{item.name}"
            covered.add(file_key)
            size = present.get(file_key)
            if size is None:
                report.problems.append(f"{item.name}: listed in {name} ({item.size} bytes) but missing")
            elif size != item.size:
                report.problems.append(f"{item.name}: size expected {item.size} bytes, found {size}")
            else:
                problems, rows = check_file(store, file_key, item)
                report.problems.extend(problems)
                if not problems:
                    report.files += 1
                    report.rows += rows or 0
                    report.bytes += size
        listed = sum(item.rows for item in manifest.exportResults)
        if listed != manifest.totalRows:
            report.problems.append(f"{name}: totalRows expected {listed} (the sum of its files' rows), "
                                   f"found {manifest.totalRows}")
    if len(manifests) > 1:
        report.problems.append(f"{store.uri(folder)}/: {len(manifests)} manifests in one window folder: "
                               + ", ".join(k[len(folder) + 1:] for k in manifests))
    shared = bool(dataset_ids) and not any(d in folder.split("/") for d in dataset_ids)
    for key in sorted(set(present) - covered):
        name = key[len(folder) + 1:]
        if shared and not (name.rsplit("/", 1)[-1].startswith(".") or name.endswith(".part")):
            if _other_dataset(store, key, dataset_ids, present, covered):
                continue
        report.problems.append(_stray(name))


def _other_dataset(store: Store, key: str, dataset_ids: set[str], present: dict, covered: set[str]) -> bool:
    """In a folder that several datasets share (a custom folder template), another dataset's manifest and files are
    that dataset's delivery, not strays."""
    if not is_manifest(key):
        return key in covered
    try:
        other = Manifest.from_json(store.read(key))
    except (ValueError, KeyError, TypeError):
        return False
    if other.datasetId in dataset_ids:
        return False
    folder = key.rsplit("/", 1)[0]
    covered.update(f"{folder}/{item.name}" for item in other.exportResults)
    return True


def verify_delivery(
    uri: str,
    *,
    config: Path | str | None = None,
    destination: str | None = None,
    endpoint_url: str | None = None,
) -> DeliveryReport:
    """Check a delivered window (a manifest URI or a window folder URI) with the store's own SDK. Raises
    ReceiverError for a bad URI, missing credentials or a store that cannot be read."""
    creds = credentials_from(Path(config) if config else None, destination, endpoint_url)
    store, path = open_store(uri.strip(), creds)
    shown = uri.split("?", 1)[0]
    report = DeliveryReport(uri=shown)
    try:
        _verify(store, path, report)
    except ReceiverError:
        raise
    except Exception as exc:  # noqa: BLE001 - any SDK failure becomes one secret-free line
        raise ReceiverError(f"cannot read {shown}: {scrub(store.reason(exc), store.secrets)}") from None
    finally:
        try:
            store.close()
        except Exception:  # noqa: BLE001 - closing a broken connection
            pass
    report.complete = not report.problems
    return report


# -- the command ---------------------------------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser, config_dest: str = "config") -> None:
    """The command's arguments, shared by `ajo-verify-delivery` and `ajo-exports verify-delivery`."""
    parser.add_argument("uri", help="a manifest URI or a window folder URI (.../<datasetId>/exportTime=.../)")
    parser.add_argument("--config", dest=config_dest, help="exports.yaml whose destination holds the credentials")
    parser.add_argument("--destination", help="the destination entry of --config (needed when it has several)")
    parser.add_argument("--endpoint-url", help="the store's endpoint (S3, GCS, Azure Blob), e.g. an emulator")
    parser.add_argument("--json", action="store_true", help="print the report as one JSON object")


def run(args: argparse.Namespace, config: str | None) -> int:
    """Verify and print: 0 complete, 1 with one line per problem; ReceiverError (status 2) is the caller's."""
    report = verify_delivery(args.uri, config=config, destination=args.destination, endpoint_url=args.endpoint_url)
    if args.json:
        print(json.dumps(report.to_dict(), indent=2))
    elif report.complete:
        print(f"complete: {report.uri}: {report.files} files, {report.rows} rows, {report.bytes} bytes "
              f"as {len(report.manifests)} manifest{'s' if len(report.manifests) != 1 else ''} list")
    else:
        for problem in report.problems:
            print(problem)
        print(f"incomplete: {report.uri}: {len(report.problems)} problem{'s' if len(report.problems) != 1 else ''}")
    return 0 if report.complete else 1


class _OneLineParser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message}\n")


def parser(prog: str = "ajo-verify-delivery") -> argparse.ArgumentParser:
    result = _OneLineParser(
        prog=prog, formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Check a delivered export window as its receiver: files, sizes, sha256, rows, strays. "
        "Exit 0 when complete, 1 with one line per problem, 2 for bad arguments or an unreachable store.",
        epilog="credentials from --config/--destination, or else from the environment:" + ENV_HELP,
    )
    add_arguments(result)
    return result


def main(argv: list[str] | None = None) -> int:
    """`ajo-verify-delivery URI`: the receiver's command, without Dagster."""
    try:
        args = parser().parse_args(argv)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else 2
    try:
        return run(args, args.config)
    except ReceiverError as exc:
        print(f"ajo-verify-delivery: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
