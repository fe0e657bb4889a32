"""The `exports.yaml` models: organisation, source, destinations, dataflows and access.

The file mirrors AEP's Flow Service objects: a destination is a base connection (credentials) plus a target
(bucket/container/folder); a dataflow ties a set of datasets to one destination with one format and one
schedule. Secrets are never values in the file, only `${ENV_VAR}` references resolved by Dagster's `EnvVar`.
Each destination and source type declares its own settings in its module (`destinations/`, `lake/`); this file
takes their unions from the two registries and lists no type itself.
"""

from __future__ import annotations

import os
import re
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Literal, Union

import yaml
from pydantic import Field, ValidationError, field_validator, model_validator

from ajo_exports.catalog import DATASETS, Dataset, Tier, UnknownDatasetError, get_dataset
from ajo_exports.destinations import DESTINATIONS
from ajo_exports.lake import SOURCES
from ajo_exports.lake.local import LocalSourceConfig
from ajo_exports.settings import (
    FOLDER,
    SECRET_FIELD_HINTS,
    ConfigError,
    FieldProblem,
    Name,
    Secret,
    SettingsModel,
)

BUNDLED_CONFIG = Path(__file__).with_name("demo_exports.yaml")
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


# exports.yaml's `type:` unions come from the connector registries: a new destination or source type is one module.
DestinationConfig = Annotated[Union[DESTINATIONS], Field(discriminator="type")]  # noqa: UP007 - built from a tuple
SourceConfig = Annotated[Union[SOURCES], Field(discriminator="type")]  # noqa: UP007 - built from a tuple


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


class Schedule(SettingsModel):
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


class Dataflow(SettingsModel):
    name: Name
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


class Organization(SettingsModel):
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


class Guardrails(SettingsModel):
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


class Execution(SettingsModel):
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


class OpenLineageConfig(SettingsModel):
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


class ExportsConfig(SettingsModel):
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
