"""The lake on object storage: the local lake's layout under an s3://, gs://, az:// or abfss:// URL.

Layout (exactly what :class:`~ajo_exports.lake.local.LocalLake` writes, copied to a bucket or container)::

    <url>/<slug>/batch-<batchId>.parquet
    <url>/<slug>/_batches.json

Everything is read with polars' native cloud readers (object_store in Rust), lazily: an export streams each batch
and never holds a whole dataset. The endpoint and the credentials are always explicit storage options and polars'
own credential discovery is off, so no request ever goes to a cloud metadata service (169.254.169.254).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

import polars as pl
from pydantic import field_validator, model_validator

from ajo_exports.catalog import DATASETS, Dataset
from ajo_exports.lake.local import INDEX_FILE, _schema_mismatch, batch_of, checked_index, select_batches
from ajo_exports.lake.source import Batch, LakeError, SourceSettings
from ajo_exports.settings import (
    FOLDER,
    GCS_BUCKET,
    FieldProblem,
    Secret,
    check_azure_container,
    check_endpoint,
    check_s3_bucket,
)

__all__ = ["LakeUrl", "ObjectStoreLake", "ObjectStoreSourceConfig", "parse_lake_url", "storage_options"]

SCHEMES = ("s3", "gs", "az", "abfss")
_URL = re.compile(r"^(?P<scheme>[a-z0-9]+)://(?P<bucket>[^/?#]+)(?P<prefix>/[^?#]*)?$")
_ABFSS_HOST = re.compile(r"^(?P<container>[^@]+)@(?P<account>[a-z0-9]{3,24})\.dfs\.core\.windows\.net$")
_CODE = re.compile(r"<Code>\s*([A-Za-z]+)\s*</Code>")
_MISSING_BUCKET = {"NoSuchBucket", "ContainerNotFound", "FilesystemNotFound"}
_MISSING_OBJECT = {"NoSuchKey", "BlobNotFound", "PathNotFound", "ResourceNotFound"}
_REFUSED = {
    "AccessDenied",
    "AuthenticationFailed",
    "AuthorizationFailure",
    "AuthorizationPermissionMismatch",
    "ExpiredToken",
    "InvalidAccessKeyId",
    "InvalidToken",
    "SignatureDoesNotMatch",
}
GOOGLE_ENDPOINT = "https://storage.googleapis.com"
BAD_PREFIX = "the prefix may hold only ASCII letters, digits and / ! - _ . * ' ( ), and no '..' or empty folders"
# Per scheme of a lake URL: the credentials it needs, and the fields that apply to it.
LAKE_FIELDS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "s3": (("access_key_id", "secret_access_key"), ("endpoint_url", "region", "access_key_id", "secret_access_key")),
    "gs": (("service_account_json",), ("endpoint_url", "service_account_json")),
    "az": (("account_name", "account_key"), ("account_name", "account_key", "blob_endpoint")),
    "abfss": (("account_key",), ("account_name", "account_key", "blob_endpoint")),
}
_UNREACHABLE = ("tcp connect error", "error sending request", "Connection refused", "dns error", "timed out")


@dataclass(frozen=True)
class LakeUrl:
    """A lake URL taken apart: the scheme, the bucket (or container), the account of an abfss URL, the prefix."""

    scheme: str
    bucket: str
    prefix: str
    account: str | None = None

    @property
    def kind(self) -> str:
        """What the store calls its top-level folder, for messages."""
        return "container" if self.scheme in ("az", "abfss") else "bucket"

    @property
    def root(self) -> str:
        host = f"{self.bucket}@{self.account}.dfs.core.windows.net" if self.scheme == "abfss" else self.bucket
        return f"{self.scheme}://{host}" + (f"/{self.prefix}" if self.prefix else "")


def parse_lake_url(url: str) -> LakeUrl:
    """Split ``scheme://bucket/prefix`` (or ``abfss://container@account.dfs.core.windows.net/prefix``); raises
    ValueError naming what is wrong, which the config turns into its one-line error."""
    match = _URL.match(url.strip())
    if not match or match["scheme"] not in SCHEMES:
        raise ValueError(
            "use s3://bucket/prefix, gs://bucket/prefix, az://container/prefix or "
            "abfss://container@account.dfs.core.windows.net/prefix"
        )
    scheme, bucket, prefix = match["scheme"], match["bucket"], (match["prefix"] or "").strip("/")
    if ".." in prefix.split("/") or "//" in prefix:
        raise ValueError(BAD_PREFIX)
    account = None
    if scheme == "abfss":
        host = _ABFSS_HOST.match(bucket)
        if not host:
            raise ValueError("abfss URLs are abfss://<container>@<account>.dfs.core.windows.net/<prefix>")
        bucket, account = host["container"], host["account"]
    return LakeUrl(scheme, bucket, prefix, account)


class ObjectStoreSourceConfig(SourceSettings):
    """The same lake layout under an s3://, gs://, az:// or abfss:// URL, read with an explicit endpoint and
    explicit keys (never a cloud metadata service)."""

    type: Literal["object_store"]
    url: str
    """s3://bucket/prefix, gs://bucket/prefix, az://container/prefix or
    abfss://container@account.dfs.core.windows.net/prefix."""
    endpoint_url: str | None = None
    """s3:// and gs://: the endpoint; default https://s3.<region>.amazonaws.com or Google's."""
    region: str | None = None
    """s3://: the bucket's region; default us-east-1."""
    access_key_id: Secret | None = None
    """s3://: the access key ID, as `${VAR}`."""
    secret_access_key: Secret | None = None
    """s3://: the secret access key, as `${VAR}`."""
    account_name: str | None = None
    """az:// and abfss://: the storage account (abfss:// names it in the URL)."""
    account_key: Secret | None = None
    """az:// and abfss://: the account key, as `${VAR}`."""
    blob_endpoint: str | None = None
    """az:// and abfss://: the Blob endpoint; default https://<account>.blob.core.windows.net."""
    service_account_json: Secret | None = None
    """gs://: a service account key's JSON, as `${VAR}`."""

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        parsed = parse_lake_url(value)
        if parsed.scheme == "s3":
            check_s3_bucket(parsed.bucket)
        if parsed.scheme == "gs" and not GCS_BUCKET.match(parsed.bucket):
            raise ValueError("GCS bucket names are 3-63 of [a-z0-9-_.]")
        if parsed.scheme in ("az", "abfss"):
            check_azure_container(parsed.bucket)
        if not FOLDER.match(parsed.prefix):
            raise ValueError(BAD_PREFIX)
        return value.rstrip("/")

    @field_validator("endpoint_url", "blob_endpoint")
    @classmethod
    def _endpoint(cls, value: str | None) -> str | None:
        return check_endpoint(value)

    @model_validator(mode="after")
    def _credentials(self) -> ObjectStoreSourceConfig:
        needed, applies = LAKE_FIELDS[self.scheme]
        for name in type(self).model_fields:
            if name not in ("type", "url", *applies) and getattr(self, name) is not None:
                where = ", ".join(f"{s}://" for s, (_, fields) in LAKE_FIELDS.items() if name in fields)
                raise FieldProblem(("source", name), f"{name} applies only to {where} lake URLs, not {self.url}")
        for name in needed:
            if getattr(self, name) is None:
                kind = "a ${VAR} reference" if name != "account_name" else "the storage account's name"
                raise FieldProblem(
                    ("source", name), f"a {self.scheme}:// lake needs {name} ({kind}): credentials are always explicit"
                )
        account = parse_lake_url(self.url).account
        if account and self.account_name and self.account_name != account:
            raise FieldProblem(("source", "account_name"), f"is not the url's account {account!r}")
        return self

    @property
    def scheme(self) -> str:
        return parse_lake_url(self.url).scheme

    def open_lake(self) -> ObjectStoreLake:
        fields = {name: getattr(self, name) for name in type(self).model_fields if name not in ("type", "url")}
        return ObjectStoreLake(self.url, storage_options(self.url, **fields))


def storage_options(
    url: str,
    *,
    endpoint_url: str | None = None,
    region: str | None = None,
    access_key_id: str | None = None,
    secret_access_key: str | None = None,
    account_name: str | None = None,
    account_key: str | None = None,
    blob_endpoint: str | None = None,
    service_account_json: str | None = None,
) -> dict[str, str]:
    """polars' storage options for the lake at `url`: always an explicit endpoint and explicit credentials, so
    object_store never falls back to environment or instance-metadata credentials. Raises LakeError naming the
    missing field (secrets are given resolved, and are never part of a message)."""
    parsed = parse_lake_url(url)

    def need(value: str | None, field: str) -> str:
        if not value:
            raise LakeError(f"lake {parsed.root}: {field} is not set (an explicit credential is required)")
        return value

    if parsed.scheme == "s3":
        region = region or "us-east-1"
        endpoint = endpoint_url or f"https://s3.{region}.amazonaws.com"
        return {
            "aws_endpoint_url": endpoint.rstrip("/"),
            "aws_region": region,
            "aws_access_key_id": need(access_key_id, "access_key_id"),
            "aws_secret_access_key": need(secret_access_key, "secret_access_key"),
            "aws_allow_http": str(endpoint.startswith("http://")).lower(),
            "aws_virtual_hosted_style_request": "false",
        }
    if parsed.scheme in ("az", "abfss"):
        account = account_name or parsed.account
        if parsed.account and account_name and account_name != parsed.account:
            raise LakeError(f"lake {parsed.root}: account_name {account_name!r} is not the URL's account")
        account = need(account, "account_name")
        endpoint = blob_endpoint or f"https://{account}.blob.core.windows.net"
        return {
            "azure_storage_account_name": account,
            "azure_storage_account_key": need(account_key, "account_key"),
            "azure_storage_endpoint": endpoint.rstrip("/"),
            "azure_allow_http": str(endpoint.startswith("http://")).lower(),
        }
    key = _google_key(parsed, need(service_account_json, "service_account_json"), endpoint_url)
    return {"google_service_account_key": key}


def _google_key(parsed: LakeUrl, text: str, endpoint_url: str | None) -> str:
    """The service account key for object_store; an `endpoint_url` becomes the key's `gcs_base_url`, and the
    literal ``{"type": "emulator"}`` (only with `endpoint_url`) sends unauthenticated requests to that endpoint."""
    try:
        info = json.loads(text)
    except ValueError:
        raise LakeError(f"lake {parsed.root}: service_account_json is not JSON") from None
    if not isinstance(info, dict):
        raise LakeError(f"lake {parsed.root}: service_account_json is not a JSON object")
    if info.get("type") == "emulator":
        if not endpoint_url:
            raise LakeError(f'lake {parsed.root}: {{"type": "emulator"}} needs endpoint_url (an emulator)')
        info = {"client_email": "", "private_key": "", "private_key_id": "", "disable_oauth": True}
    elif info.get("type") != "service_account":
        raise LakeError(f'lake {parsed.root}: service_account_json is not a service account key ("type")')
    info["gcs_base_url"] = (endpoint_url or GOOGLE_ENDPOINT).rstrip("/")
    return json.dumps(info)


class ObjectStoreLake:
    """The Parquet lake under an object-store URL: implements :class:`~ajo_exports.lake.source.DatasetSource`."""

    def __init__(self, url: str, options: dict[str, str]) -> None:
        self.url = parse_lake_url(url)
        self.root = self.url.root
        self._options = dict(options)

    def __repr__(self) -> str:
        return f"ObjectStoreLake({self.root!r})"

    # --- reading objects --------------------------------------------------------------------------------------

    def _object(self, dataset: Dataset, name: str) -> str:
        return f"{self.root}/{dataset.slug}/{name}"

    def _scan(self, urls: str | list[str]) -> pl.LazyFrame:
        return pl.scan_parquet(
            urls,
            storage_options=self._options,
            credential_provider=None,
            glob=False,
            hive_partitioning=False,
        )

    def _failure(self, exc: BaseException, what: str) -> tuple[str, str]:
        """(kind, one-line reason) of a failed read: kind is missing-bucket, missing, refused or other."""
        text = str(exc)
        found = _CODE.search(text)
        code = found.group(1) if found else ""
        if code in _MISSING_BUCKET:
            return "missing-bucket", f"{self.url.kind} {self.url.bucket} does not exist ({code})"
        if code in _MISSING_OBJECT or (not code and isinstance(exc, FileNotFoundError)):
            return "missing", f"{what} does not exist"
        if code in _REFUSED or isinstance(exc, PermissionError) or re.search(r"status code: 40[13]\b", text):
            return "refused", f"the credentials were refused reading {what} ({code or type(exc).__name__})"
        if isinstance(exc, ConnectionError) or any(marker in text for marker in _UNREACHABLE):
            endpoint = next((v for k, v in self._options.items() if k.endswith("_endpoint_url") or
                             k == "azure_storage_endpoint"), "its endpoint")
            return "other", f"the endpoint {endpoint} could not be reached reading {what}"
        first = text.strip().splitlines()[0] if text.strip() else type(exc).__name__
        first = first.removeprefix("object-store error: ").split(": Error performing")[0].split(" (path:")[0]
        return "other", f"reading {what} failed: {self._scrub(first)[:300]}"

    def _scrub(self, text: str) -> str:
        """Drop any credential value a store might echo back, so no error carries a secret."""
        for key, value in self._options.items():
            if value and len(value) > 4 and any(word in key for word in ("secret", "key", "token")):
                text = text.replace(value, "***")
        return text

    def _read_index(self, dataset: Dataset, missing_ok: bool = False) -> list[dict[str, Any]] | None:
        url = self._object(dataset, INDEX_FILE)
        try:
            lines = pl.scan_lines(url, storage_options=self._options, credential_provider=None, glob=False).collect()
        except Exception as exc:  # noqa: BLE001 - every store failure becomes one line
            kind, reason = self._failure(exc, f"batch index {url}")
            if kind == "missing":
                if missing_ok:
                    return None
                raise LakeError(
                    f"lake at {self.root} has no batches for dataset {dataset.slug}: its batch index {url} is missing"
                ) from None
            raise LakeError(f"lake {self.root}: {reason}") from None
        try:
            entries = json.loads("\n".join(lines.to_series().to_list()))
        except ValueError as exc:
            raise LakeError(f"batch index {url} of dataset {dataset.slug} is not valid JSON: {exc}") from None
        return checked_index(entries, url, dataset)

    def _batch(self, dataset: Dataset, entry: dict[str, Any]) -> Batch:
        return batch_of(dataset, entry, self._object(dataset, entry["file"]))

    # --- state ------------------------------------------------------------------------------------------------

    def is_seeded(self, dataset: Dataset) -> bool:
        """Whether the dataset has a batch index; a store that refuses or is missing raises LakeError."""
        return self._read_index(dataset, missing_ok=True) is not None

    def has_data(self) -> bool:
        """Whether any catalog dataset has a batch index under the URL."""
        return any(self.is_seeded(d) for d in DATASETS)

    # --- DatasetSource ----------------------------------------------------------------------------------------

    def list_batches(
        self,
        dataset: Dataset,
        ingested_from: datetime | None = None,
        ingested_until: datetime | None = None,
    ) -> list[Batch]:
        """Batches ingested in [from, until), oldest first; raises LakeError when the dataset was never seeded."""
        batches = [self._batch(dataset, entry) for entry in self._read_index(dataset) or []]
        return select_batches(batches, ingested_from, ingested_until)

    def _check(self, dataset: Dataset, batch: Batch) -> None:
        """Read one batch file's footer, so a missing or corrupt file fails before anything is written."""
        if batch.dataset_slug != dataset.slug:
            raise LakeError(f"batch {batch.batch_id} belongs to {batch.dataset_slug}, not {dataset.slug}")
        try:
            file_schema = self._scan(batch.path).collect_schema()
        except Exception as exc:  # noqa: BLE001 - any reader failure means an unusable file
            kind, reason = self._failure(exc, f"batch file {batch.path}")
            if kind == "missing":
                raise LakeError(
                    f"batch file {batch.path} of dataset {dataset.slug} is listed in {INDEX_FILE} but missing: "
                    f"restore it or remove batch {batch.batch_id} from the index"
                ) from None
            if kind == "other" and "could not be reached" not in reason:
                raise LakeError(f"batch file {batch.path} of dataset {dataset.slug} is not readable Parquet: "
                                f"{reason.removeprefix(f'reading batch file {batch.path} failed: ')}") from None
            raise LakeError(f"lake {self.root}: {reason}") from None
        problem = _schema_mismatch(dataset.schema, file_schema)
        if problem:
            raise LakeError(f"batch file {batch.path} of dataset {dataset.slug} does not match: {problem}")

    def scan(self, dataset: Dataset, batches: Sequence[Batch]) -> pl.LazyFrame:
        """Lazy scan of exactly ``batches``; each file's footer is checked first so a bad file fails here."""
        if not batches:
            return pl.LazyFrame(schema=dataset.schema)
        for batch in batches:
            self._check(dataset, batch)
        frame = self._scan([batch.path for batch in batches])
        return frame.select([pl.col(name).cast(dtype) for name, dtype in dataset.schema.items()])

    def read(
        self, dataset: Dataset, batch: Batch, start: int = 0, length: int | None = None, chunk_rows: int = 10_000
    ) -> Iterator[pl.DataFrame]:
        """Rows [start, start + length) of one batch in chunks of ``chunk_rows``: the slice is pushed down to the
        Parquet reader, which fetches only the row groups that hold it, and the chunks stream out."""
        frame = self._scan(batch.path).select([pl.col(name).cast(dtype) for name, dtype in dataset.schema.items()])
        try:
            yield from frame.slice(start, length).collect_batches(chunk_size=chunk_rows)
        except Exception as exc:  # noqa: BLE001 - every store failure becomes one line
            raise LakeError(f"lake {self.root}: {self._failure(exc, f'batch file {batch.path}')[1]}") from None
