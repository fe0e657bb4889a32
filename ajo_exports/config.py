"""The `exports.yaml` models: organisation, destinations, dataflows and access.

The file mirrors AEP's Flow Service objects: a destination is a base connection (credentials) plus a target
(bucket/container/folder); a dataflow ties a set of datasets to one destination with one format and one
schedule. Secrets are never values in the file, only `${ENV_VAR}` references resolved by Dagster's `EnvVar`.
"""

from __future__ import annotations

import os
import re
import uuid
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    GetCoreSchemaHandler,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import CoreSchema, core_schema

from ajo_exports.catalog import DATASETS, Dataset, Tier, UnknownDatasetError, get_dataset

BUNDLED_CONFIG = Path(__file__).with_name("demo_exports.yaml")
SECRET_REF = re.compile(r"^\$\{([A-Za-z_][A-Za-z0-9_]*)\}$")

# AEP's validation rules (../shared/docs/aep-dataset-export.md §1).
S3_BUCKET = re.compile(
    r"(?=^.{3,63}$)(?!^(\d+\.)+\d+$)(^(([a-z0-9]|[a-z0-9][a-z0-9\-]*[a-z0-9])\.)*([a-z0-9]|[a-z0-9][a-z0-9\-]*[a-z0-9])$)"
)
AZURE_CONTAINER = re.compile(r"^[a-z0-9](?!.*--)[a-z0-9-]{1,61}[a-z0-9]$")
GCS_BUCKET = re.compile(r"^[a-z0-9][a-z0-9\-_.]{1,220}[a-z0-9]$")
FOLDER = re.compile(r"^[0-9a-zA-Z/!\-_.*'()]*$")
FOLDER_MACROS = frozenset(
    {
        "DATASET_ID",
        "EXPORT_TIME",
        "DATETIME",
        "SANDBOX_NAME",
        "ORGANIZATION_NAME",
        "DESTINATION",
        "DESTINATION_INSTANCE_NAME",
        "DESTINATION_INSTANCE_ID",
    }
)
MACRO = re.compile(r"%([A-Z_]+)(?:\(([^)]*)\))?%")
NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
ABFSS_URL = re.compile(
    r"^abfss://(?P<container>[a-z0-9](?!.*--)[a-z0-9-]{1,61}[a-z0-9])@(?P<account>[a-z0-9]{3,24})\.dfs\.core\.windows\.net/?$"
)


class ConfigError(Exception):
    """A one-line, user-facing problem with the configuration: names the file, the field and the value."""


def ajo_home() -> Path:
    """All state of the embedded default lives here: lake, exports and the Dagster instance."""
    return Path(os.environ.get("AJO_EXPORTS_HOME", ".ajo")).resolve()


def config_path() -> Path:
    """The config file in force: AJO_EXPORTS_CONFIG, else ./exports.yaml, else the bundled demo."""
    if os.environ.get("AJO_EXPORTS_CONFIG"):
        return Path(os.environ["AJO_EXPORTS_CONFIG"]).resolve()
    local = Path("exports.yaml")
    return local.resolve() if local.exists() else BUNDLED_CONFIG


def config_digest(path: Path) -> str:
    """sha256 of a config file's bytes: a process that rebuilds definitions from the file checks it is unchanged."""
    import hashlib

    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror or exc}") from None


def destination_id(name: str) -> str:
    """A stable UUID for a destination connection (AEP's destinationId in manifest names)."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"ajo-exports:destination:{name}"))


class SecretRef(str):
    """`${VAR}`: the name of an environment variable that holds a secret, never the secret itself."""

    @property
    def env_var(self) -> str:
        return SECRET_REF.match(self).group(1)  # type: ignore[union-attr]

    @classmethod
    def _validate(cls, value: object) -> SecretRef:
        if not isinstance(value, str) or not SECRET_REF.match(value):
            raise ValueError("inline secrets are not allowed: write an environment reference such as ${MY_SECRET}")
        return cls(value)

    @classmethod
    def __get_pydantic_core_schema__(cls, source: object, handler: GetCoreSchemaHandler) -> CoreSchema:
        return core_schema.no_info_plain_validator_function(
            cls._validate, serialization=core_schema.plain_serializer_function_ser_schema(str)
        )


Secret = SecretRef
SECRET_FIELD_HINTS = (
    "secret",
    "password",
    "private_key",
    "connection_string",
    "sas_url",
    "service_account",
    "access_key",
)


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    def missing_secrets(self) -> list[str]:
        """Secret fields whose environment variable is not set here (review reports them before a run fails)."""
        return [
            f"{field} (${{{value.env_var}}})"
            for field, value in self
            if isinstance(value, SecretRef) and not os.environ.get(value.env_var)
        ]


DEFAULT_MAX_CONCURRENT_EXPORTS = 2


def clean_folder(value: str) -> str:
    """A folder inside the destination's bucket or container: allowed characters only, no '..', no outer '/'."""
    if not FOLDER.match(value):
        raise ValueError("folders may hold only ASCII letters, digits and / ! - _ . * ' ( )")
    if ".." in value.split("/"):
        raise ValueError("folders may not contain '..'")
    return value.strip("/")


class _DestinationBase(_Model):
    name: str
    folder: str = ""
    pgp_public_key: str | None = None
    # How many exports to this destination run at once within a run. Operational, not reviewed: it changes how fast
    # files arrive, not what or where, so it is left out of the confirmed hash (activation.py) and of review.
    max_concurrent_exports: int = Field(DEFAULT_MAX_CONCURRENT_EXPORTS, ge=1, le=64, exclude=True)

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not NAME.match(value):
            raise ValueError("use lowercase letters, digits, '-' and '_' (at most 63 characters)")
        return value

    @field_validator("folder")
    @classmethod
    def _folder(cls, value: str) -> str:
        return clean_folder(value)

    @property
    def destination_id(self) -> str:
        return destination_id(self.name)

    def one_credential(self, pair: tuple[str, str], alternative: str) -> str:
        """AEP's two auth specs of a destination: both fields of `pair`, or `alternative` alone."""
        given = [getattr(self, name) is not None for name in pair]
        if all(given) and getattr(self, alternative) is None:
            return "pair"
        if not any(given) and getattr(self, alternative) is not None:
            return alternative
        raise ValueError(f"give either {pair[0]} and {pair[1]}, or {alternative}")


class LocalDestinationConfig(_DestinationBase):
    type: Literal["local"]
    path: str | None = None  # default: <AJO_EXPORTS_HOME>/exports

    @property
    def location(self) -> str:
        return (Path(self.path or ajo_home() / "exports").expanduser().resolve() / self.folder).as_uri()


class AmazonS3DestinationConfig(_DestinationBase):
    type: Literal["amazon_s3"]
    bucket: str
    access_key_id: Secret | None = None
    secret_access_key: Secret | None = None
    role_arn: str | None = None
    region: str | None = None
    endpoint_url: str | None = None

    @field_validator("bucket")
    @classmethod
    def _bucket(cls, value: str) -> str:
        if not S3_BUCKET.search(value):
            raise ValueError("S3 bucket names are 3-63 lowercase letters, digits, '-' or '.', not IP-shaped")
        return value

    @model_validator(mode="after")
    def _auth(self) -> AmazonS3DestinationConfig:
        if self.one_credential(("access_key_id", "secret_access_key"), "role_arn") == "role_arn":
            if not re.match(r"^arn:aws:iam::\d{12}:role/[\w+=,.@/-]+$", self.role_arn or ""):
                raise ValueError(f"role_arn {self.role_arn!r} is not arn:aws:iam::<account>:role/<name>")
        return self

    @property
    def location(self) -> str:
        return f"s3://{self.bucket}/{self.folder}"


class AzureBlobDestinationConfig(_DestinationBase):
    type: Literal["azure_blob"]
    connection_string: Secret
    container: str

    @field_validator("container")
    @classmethod
    def _container(cls, value: str) -> str:
        if not AZURE_CONTAINER.match(value):
            raise ValueError("container names are 3-63 lowercase letters, digits and single hyphens")
        return value

    @property
    def location(self) -> str:
        return f"azure blob container {self.container}, folder /{self.folder}"


class AdlsGen2DestinationConfig(_DestinationBase):
    type: Literal["adls_gen2"]
    url: str
    tenant: str
    client_id: str
    client_secret: Secret
    blob_endpoint: str | None = None

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        if not ABFSS_URL.match(value):
            raise ValueError("url must be abfss://<container>@<account>.dfs.core.windows.net")
        return value

    @property
    def container(self) -> str:
        return ABFSS_URL.match(self.url).group("container")  # type: ignore[union-attr]

    @property
    def account(self) -> str:
        return ABFSS_URL.match(self.url).group("account")  # type: ignore[union-attr]

    @property
    def location(self) -> str:
        return f"{self.url.rstrip('/')}/{self.folder}"


class DataLandingZoneDestinationConfig(_DestinationBase):
    type: Literal["data_landing_zone"]
    sas_url: Secret

    @model_validator(mode="after")
    def _no_pgp(self) -> DataLandingZoneDestinationConfig:
        if self.pgp_public_key is not None:
            raise ValueError("the Data Landing Zone has no encryption option: remove pgp_public_key")
        return self

    @property
    def location(self) -> str:
        return f"data landing zone container dlz-destination, folder /{self.folder}"


class GoogleCloudStorageDestinationConfig(_DestinationBase):
    type: Literal["google_cloud_storage"]
    bucket: str
    hmac_access_key_id: Secret | None = None
    hmac_secret: Secret | None = None
    service_account_json: Secret | None = None
    endpoint_url: str | None = None
    project: str | None = None

    @field_validator("bucket")
    @classmethod
    def _bucket(cls, value: str) -> str:
        if not GCS_BUCKET.match(value) or value.startswith("goog") or re.search("g[o0][o0]gle", value):
            raise ValueError(
                "GCS bucket names are 3-63 of [a-z0-9-_.], not starting with 'goog' or containing 'google'"
            )
        return value

    @model_validator(mode="after")
    def _auth(self) -> GoogleCloudStorageDestinationConfig:
        self.one_credential(("hmac_access_key_id", "hmac_secret"), "service_account_json")
        return self

    @property
    def location(self) -> str:
        return f"gs://{self.bucket}/{self.folder}"


class SftpDestinationConfig(_DestinationBase):
    type: Literal["sftp"]
    host: str
    port: int = Field(22, ge=1, le=65535)
    username: str
    password: Secret | None = None
    private_key: Secret | None = None
    known_hosts: str | None = None
    host_key_fingerprint: str | None = None

    @model_validator(mode="after")
    def _auth(self) -> SftpDestinationConfig:
        if (self.password is None) == (self.private_key is None):
            raise ValueError("give exactly one of password or private_key")
        if self.known_hosts is None and self.host_key_fingerprint is None:
            raise ValueError("give known_hosts or host_key_fingerprint: unknown host keys are refused")
        return self

    @field_validator("folder")
    @classmethod
    def _folder(cls, value: str) -> str:
        """A path on the server: an absolute folder is used as given, a relative one is under the login folder."""
        return ("/" if value.startswith("/") else "") + clean_folder(value)

    @property
    def location(self) -> str:
        """`/~/` names the login folder, as curl's sftp:// URLs do; the real path is known once connected."""
        path = self.folder if self.folder.startswith("/") else "/~/" + self.folder
        return f"sftp://{self.username}@{self.host}:{self.port}{path}"


DestinationConfig = Annotated[
    LocalDestinationConfig
    | AmazonS3DestinationConfig
    | AzureBlobDestinationConfig
    | AdlsGen2DestinationConfig
    | DataLandingZoneDestinationConfig
    | GoogleCloudStorageDestinationConfig
    | SftpDestinationConfig,
    Field(discriminator="type"),
]


LAKE_URL = re.compile(r"^(?P<scheme>s3|gs|az|abfss)://(?P<bucket>[^/?#]+)(?P<prefix>/[^?#]*)?$")
ENDPOINT = re.compile(r"^https?://[^/?#\s]+(/[^?#\s]*)?$")
# Per scheme of a lake URL: the credentials it needs, and the fields that apply to it.
LAKE_FIELDS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "s3": (("access_key_id", "secret_access_key"), ("endpoint_url", "region", "access_key_id", "secret_access_key")),
    "gs": (("service_account_json",), ("endpoint_url", "service_account_json")),
    "az": (("account_name", "account_key"), ("account_name", "account_key", "blob_endpoint")),
    "abfss": (("account_key",), ("account_name", "account_key", "blob_endpoint")),
}


class LocalSourceConfig(_Model):
    """The embedded local lake (the default): Parquet batches and a batch index per dataset under `path`."""

    type: Literal["local"]
    path: str | None = None  # default: <AJO_EXPORTS_HOME>/lake

    def lake_root(self, home: Path) -> Path:
        return Path(self.path).expanduser().resolve() if self.path else home / "lake"


class ObjectStoreSourceConfig(_Model):
    """The same lake layout under an s3://, gs://, az:// or abfss:// URL, read with an explicit endpoint and
    explicit keys (never a cloud metadata service)."""

    type: Literal["object_store"]
    url: str
    endpoint_url: str | None = None  # S3 (default https://s3.<region>.amazonaws.com) or a GCS emulator
    region: str | None = None
    access_key_id: Secret | None = None
    secret_access_key: Secret | None = None
    account_name: str | None = None
    account_key: Secret | None = None
    blob_endpoint: str | None = None  # Azure (default https://<account>.blob.core.windows.net)
    service_account_json: Secret | None = None

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        match = LAKE_URL.match(value)
        if not match:
            raise ValueError(
                "use s3://bucket/prefix, gs://bucket/prefix, az://container/prefix or "
                "abfss://container@account.dfs.core.windows.net/prefix"
            )
        scheme, bucket, prefix = match["scheme"], match["bucket"], (match["prefix"] or "").strip("/")
        if scheme == "s3" and not S3_BUCKET.search(bucket):
            raise ValueError("S3 bucket names are 3-63 lowercase letters, digits, '-' or '.', not IP-shaped")
        if scheme == "gs" and not GCS_BUCKET.match(bucket):
            raise ValueError("GCS bucket names are 3-63 of [a-z0-9-_.]")
        if scheme == "az" and not AZURE_CONTAINER.match(bucket):
            raise ValueError("container names are 3-63 lowercase letters, digits and single hyphens")
        if scheme == "abfss" and not ABFSS_URL.match(f"abfss://{bucket}"):
            raise ValueError("url must be abfss://<container>@<account>.dfs.core.windows.net/<prefix>")
        if not FOLDER.match(prefix) or ".." in prefix.split("/") or "//" in prefix:
            raise ValueError("the prefix may hold only ASCII letters, digits and / ! - _ . * ' ( ), and no '..'")
        return value.rstrip("/")

    @field_validator("endpoint_url", "blob_endpoint")
    @classmethod
    def _endpoint(cls, value: str | None) -> str | None:
        if value is not None and not ENDPOINT.match(value):
            raise ValueError("endpoints are http(s)://host[:port][/path] URLs")
        return value

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
        if self.scheme == "abfss" and self.account_name:
            account = ABFSS_URL.match(f"abfss://{LAKE_URL.match(self.url)['bucket']}")["account"]  # type: ignore[index]
            if self.account_name != account:
                raise FieldProblem(("source", "account_name"), f"is not the url's account {account!r}")
        return self

    @property
    def scheme(self) -> str:
        return LAKE_URL.match(self.url)["scheme"]  # type: ignore[index]


SourceConfig = Annotated[LocalSourceConfig | ObjectStoreSourceConfig, Field(discriminator="type")]


class FileFormat(StrEnum):
    PARQUET = "parquet"
    JSON = "json"


class Compression(StrEnum):
    GZIP = "gzip"
    NONE = "none"
    ZSTD = "zstd"
    SNAPPY = "snappy"


class Frequency(StrEnum):
    ONCE = "once"
    DAILY = "daily"
    HOURLY = "hourly"


class Schedule(_Model):
    frequency: Frequency = Frequency.ONCE
    every_hours: Literal[3, 6, 8, 12] | None = None
    start: datetime | None = None
    end: datetime | None = None

    @field_validator("start", "end")
    @classmethod
    def _utc(cls, value: datetime | None) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)

    @model_validator(mode="after")
    def _shape(self) -> Schedule:
        if self.frequency is Frequency.HOURLY and self.every_hours is None:
            raise ValueError("hourly schedules need every_hours: 3, 6, 8 or 12")
        if self.frequency is not Frequency.HOURLY and self.every_hours is not None:
            raise ValueError("every_hours applies only to frequency: hourly")
        if self.frequency is not Frequency.ONCE:
            if self.start is None or self.end is None:
                raise ValueError("recurring schedules need a UTC start and an end date (AEP requires an end date)")
        if self.start and self.end and self.end <= self.start:
            raise ValueError(f"end {self.end.isoformat()} is not after start {self.start.isoformat()}")
        return self


class Dataflow(_Model):
    name: str
    destination: str
    datasets: Literal["all"] | list[str] = "all"
    format: FileFormat = FileFormat.PARQUET
    compression: Compression = Compression.GZIP
    manifest: bool = True
    folder_template: str = "%DATASET_ID%/%EXPORT_TIME%"
    schedule: Schedule = Schedule()
    enabled: bool = True
    max_rows_per_file: int = Field(1_000_000, ge=1)
    max_bytes_per_file: int = Field(256 * 1024 * 1024, ge=1024)

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not NAME.match(value):
            raise ValueError("use lowercase letters, digits, '-' and '_' (at most 63 characters)")
        return value

    @field_validator("folder_template")
    @classmethod
    def _template(cls, value: str) -> str:
        for macro in MACRO.findall(value):
            if macro[0] not in FOLDER_MACROS:
                raise ValueError(f"unknown folder macro %{macro[0]}% (known: {', '.join(sorted(FOLDER_MACROS))})")
        literal = MACRO.sub("", value)
        if not FOLDER.match(literal) or ".." in literal.split("/"):
            raise ValueError("folder templates may hold only macros, ASCII letters, digits and / ! - _ . * ' ( )")
        return value

    @field_validator("datasets")
    @classmethod
    def _datasets(cls, value: str | list[str]) -> str | list[str]:
        if isinstance(value, list):
            if not value:
                raise ValueError("list at least one dataset, or write 'all'")
            slugs = []
            for slug in value:
                try:
                    slugs.append(get_dataset(slug).slug)
                except UnknownDatasetError as exc:
                    raise ValueError(str(exc)) from None
            for index, slug in enumerate(slugs):
                if slug in slugs[:index]:
                    raise ValueError(f"dataset {slug!r} is listed twice (by slug or dataset ID)")
        return value

    @model_validator(mode="after")
    def _format(self) -> Dataflow:
        if self.format is FileFormat.JSON and self.compression is not Compression.GZIP:
            raise ValueError(f"json exports are gzip-compressed only (AEP), not compression: {self.compression}")
        return self

    def selected_datasets(self) -> tuple[Dataset, ...]:
        if self.datasets == "all":
            return DATASETS
        return tuple(get_dataset(slug) for slug in self.datasets)


KB_PER_PROFILE = {Tier.PRIME: 500, Tier.ULTIMATE: 700}  # AEP's yearly export volume per licensed profile (§6)


class Organization(_Model):
    name: str = "demo-org"
    sandbox: str = "prod"
    product_tier: Tier = Tier.ULTIMATE
    licensed_profiles: int | None = Field(None, ge=1)  # the licence's profiles: sets the yearly export entitlement

    @property
    def entitlement_bytes(self) -> int | None:
        """Licensed profiles × 500 KB (Prime) or × 700 KB (Ultimate) a year, KB as 1000 bytes."""
        if self.licensed_profiles is None:
            return None
        return self.licensed_profiles * KB_PER_PROFILE[self.product_tier] * 1000


class Guardrails(_Model):
    """AEP's dataset-export guardrails (§6), AEP's values by default; lower them to see them act on a small lake.

    Record (profile) datasets are checked on their first, full export (a `once` export, or the first window of a
    scheduled dataflow): above the hard limit the export fails before anything is published. Every export above
    `warn_records` runs, with a warning and a WARN asset check."""

    warn_records: int = Field(5_000_000_000, ge=1)
    record_dataset_max_records: int = Field(10_000_000_000, ge=1)  # compressed JSON or Parquet
    record_dataset_max_records_uncompressed_parquet: int = Field(1_000_000, ge=1)
    destinations_per_sandbox: int = Field(100, ge=1)

    def max_records(self, flow: Dataflow) -> tuple[int, str]:
        """The hard limit for a dataflow's record datasets, and the setting that holds it."""
        name = "record_dataset_max_records"
        if flow.format is FileFormat.PARQUET and flow.compression is Compression.NONE:
            name += "_uncompressed_parquet"
        return getattr(self, name), name


class Permission(StrEnum):
    """AEP's permissions for dataset exports (§8)."""

    VIEW_DATASETS = "view_datasets"
    VIEW_DESTINATIONS = "view_destinations"
    MANAGE_DESTINATIONS = "manage_destinations"
    MANAGE_AND_ACTIVATE_DATASET_DESTINATIONS = "manage_and_activate_dataset_destinations"


class FieldProblem(ValueError):
    """A cross-field problem found after parsing, located at a field so the one-line error can name it."""

    def __init__(self, loc: tuple[int | str, ...], message: str):
        self.loc = loc
        super().__init__(message)


class Execution(_Model):
    """How a run executes its exports: at most `max_concurrent` at once (default: the machine's cores), each
    destination at most its `max_concurrent_exports`; or, with `executor: celery`, as steps on Celery workers
    configured by `celery_config` (the YAML the workers start with, see deploy/celery.yaml)."""

    max_concurrent: int | None = Field(None, ge=1, le=256)
    executor: Literal["multiprocess", "celery"] = "multiprocess"
    celery_config: str | None = None

    @model_validator(mode="after")
    def _celery(self) -> Execution:
        if self.executor == "celery" and not self.celery_config:
            raise ValueError("executor: celery needs celery_config: the YAML its workers start with "
                             "(deploy/celery.yaml)")
        return self

    @property
    def concurrency(self) -> int:
        return self.max_concurrent or os.cpu_count() or 1


class OpenLineageConfig(_Model):
    """Where each export's OpenLineage run events go (START, COMPLETE, FAIL): an HTTP collector such as Marquez, or
    a file of one JSON event per line. Off without the section; a collector that fails or cannot be reached costs
    one warning in the run's log, never an export. Operational, like `execution`: not part of a dataflow's review."""

    transport: Literal["http", "file"]
    url: str | None = None  # http: the collector, e.g. http://127.0.0.1:5000
    endpoint: str = "api/v1/lineage"
    api_key: Secret | None = None  # http: sent as `Authorization: Bearer <key>`
    timeout_seconds: float = Field(2.0, gt=0, le=30)
    path: str | None = None  # file: appended to; relative paths are against the working directory

    @model_validator(mode="after")
    def _transport(self) -> OpenLineageConfig:
        if self.transport == "http":
            if not self.url or not re.match(r"^https?://[^/\s]+", self.url):
                raise ValueError("transport: http needs url: http(s)://<host>[:<port>] of the OpenLineage collector")
            if "@" in self.url.split("//", 1)[1].split("/", 1)[0]:
                raise ValueError("url may not carry credentials: give api_key: ${MY_SECRET} instead")
            if self.path is not None:
                raise ValueError("path applies only to transport: file")
        else:
            if not self.path:
                raise ValueError("transport: file needs path: the file the events are appended to")
            if self.url is not None or self.api_key is not None:
                raise ValueError("url and api_key apply only to transport: http")
        return self


class ExportsConfig(_Model):
    organization: Organization = Organization()
    source: SourceConfig = LocalSourceConfig(type="local")
    destinations: list[DestinationConfig]
    dataflows: list[Dataflow]
    access: dict[str, list[Permission]] = {}
    webhook_url: str | None = None
    execution: Execution = Execution()
    guardrails: Guardrails = Guardrails()
    openlineage: OpenLineageConfig | None = None

    @model_validator(mode="after")
    def _references(self) -> ExportsConfig:
        for kind, names in (
            ("destinations", [d.name for d in self.destinations]),
            ("dataflows", [f.name for f in self.dataflows]),
        ):
            for index, name in enumerate(names):
                if name in names[:index]:
                    raise FieldProblem((kind, index, "name"), f"duplicate name {name!r}")
        allowed = self.guardrails.destinations_per_sandbox
        if len(self.destinations) > allowed:
            raise FieldProblem(
                ("destinations",),
                f"sandbox {self.organization.sandbox!r} has {len(self.destinations)} destinations; at most {allowed} "
                "are allowed (guardrails.destinations_per_sandbox; AEP: 100)",
            )
        known = {d.name for d in self.destinations}
        for index, flow in enumerate(self.dataflows):
            if flow.destination not in known:
                raise FieldProblem(
                    ("dataflows", index, "destination"),
                    f"unknown destination {flow.destination!r} (known: {', '.join(sorted(known))})",
                )
        refused = [
            f"{flow.name}/{dataset.slug} (needs {dataset.tier.value.capitalize()})"
            for flow in self.dataflows
            if flow.datasets != "all"
            for dataset in flow.selected_datasets()
            if not self.entitled(dataset)
        ]
        if refused:
            raise FieldProblem(
                ("organization", "product_tier"),
                f"organization {self.organization.name!r} is on {self.organization.product_tier.value.capitalize()} "
                f"and may not export: {', '.join(refused)}",
            )
        for principal, granted in self.access.items():
            if not granted:
                raise FieldProblem(("access", principal), f"principal {principal!r} has no permission")
            if (
                Permission.MANAGE_AND_ACTIVATE_DATASET_DESTINATIONS in granted
                and Permission.VIEW_DESTINATIONS not in granted
            ):
                raise FieldProblem(
                    ("access", principal),
                    "manage_and_activate_dataset_destinations requires view_destinations (as in AEP)",
                )
        return self

    def entitled(self, dataset: Dataset) -> bool:
        """Prime organisations may export only Prime datasets; Ultimate ones may export all."""
        return self.organization.product_tier is Tier.ULTIMATE or dataset.tier is Tier.PRIME

    def datasets_of(self, flow: Dataflow) -> tuple[Dataset, ...]:
        """A dataflow's datasets; `all` means all that the organisation's tier may export."""
        return tuple(d for d in flow.selected_datasets() if self.entitled(d))

    def allows(self, principal: str | None, permission: Permission) -> bool:
        """Without an `access` section everyone may do everything (the embedded default)."""
        if not self.access:
            return True
        return principal is not None and permission in self.access.get(principal, [])

    def destination(self, name: str) -> DestinationConfig:
        for destination in self.destinations:
            if destination.name == name:
                return destination
        raise ConfigError(f"unknown destination {name!r} (known: {', '.join(d.name for d in self.destinations)})")

    def dataflow(self, name: str) -> Dataflow:
        for flow in self.dataflows:
            if flow.name == name:
                return flow
        raise ConfigError(f"unknown dataflow {name!r} (known: {', '.join(f.name for f in self.dataflows)})")


def _location(loc: tuple[int | str, ...], data: object) -> tuple[str, object]:
    """Turn a pydantic error location into `dataflows[0].format` and the offending value."""
    parts: list[str] = []
    value = data
    for item in loc:
        if isinstance(item, int):
            parts[-1] += f"[{item}]"
            value = value[item] if isinstance(value, list) and item < len(value) else None
        elif isinstance(value, dict) and value.get("type") == item:
            continue  # the tag of a discriminated union, not a field
        else:
            parts.append(str(item))
            value = value.get(item) if isinstance(value, dict) else None
    return ".".join(parts), value


def load_config(path: Path | None = None) -> ExportsConfig:
    """Read and validate exports.yaml; every problem becomes one ConfigError line naming file, field and value."""
    path = path or config_path()
    try:
        text = path.read_text(encoding="utf-8")
        raw = yaml.safe_load(text)
    except FileNotFoundError:
        raise ConfigError(f"{path}: file not found") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text (byte {exc.start})") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror or exc}") from None
    except yaml.reader.ReaderError as exc:
        line = text.count("\n", 0, exc.position) + 1
        raise ConfigError(
            f"{path}: line {line} malformed YAML: unacceptable character #x{exc.character:04x}: {exc.reason}"
        ) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise ConfigError(f"{path}:{where} malformed YAML: {getattr(exc, 'problem', exc)}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping with destinations and dataflows")
    try:
        return ExportsConfig.model_validate(raw)
    except ValidationError as exc:
        errors = exc.errors()
        error = next((e for e in errors if e["type"] == "extra_forbidden"), errors[0])
        cause = (error.get("ctx") or {}).get("error")
        loc = cause.loc if isinstance(cause, FieldProblem) else error["loc"]
        field, value = _location(loc, raw)
        message = error["msg"].removeprefix("Value error, ")
        shown = "" if isinstance(value, dict | list) or value is None else f" = {value!r}"
        if any(hint in field for hint in SECRET_FIELD_HINTS) or message.startswith("inline secrets"):
            shown = ""
        raise ConfigError(f"{path}: {field or '(top level)'}{shown}: {message}") from None
