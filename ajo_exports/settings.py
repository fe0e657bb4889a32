"""What every connector's settings share: `${VAR}` secrets, the strict base model, AEP's name rules.

A connector (a destination type or a source type) declares its settings once, as a model on this base, in its own
module; `config.py` assembles exports.yaml from the connectors' registries, and the Dagster resources are derived
from the same models (`derived_resource`). Nothing here imports Dagster: a receiver reads exports.yaml without it.
"""

from __future__ import annotations

import os
import re
import typing
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from types import NoneType, UnionType
from typing import Annotated, Any, Literal, TypeVar

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, GetCoreSchemaHandler
from pydantic_core import CoreSchema, PydanticUndefined, core_schema

T = TypeVar("T")

SECRET_REF = re.compile(r"^\$\{([A-Za-z_][A-Za-z0-9_]*)\}$")
SECRET_FIELD_HINTS = (
    "secret",
    "password",
    "private_key",
    "connection_string",
    "sas_url",
    "service_account",
    "access_key",
)

# AEP's validation rules (../shared/docs/aep-dataset-export.md §1).
S3_BUCKET = re.compile(
    r"(?=^.{3,63}$)(?!^(\d+\.)+\d+$)(^(([a-z0-9]|[a-z0-9][a-z0-9\-]*[a-z0-9])\.)*([a-z0-9]|[a-z0-9][a-z0-9\-]*[a-z0-9])$)"
)
AZURE_CONTAINER = re.compile(r"^[a-z0-9](?!.*--)[a-z0-9-]{1,61}[a-z0-9]$")
GCS_BUCKET = re.compile(r"^[a-z0-9][a-z0-9\-_.]{1,220}[a-z0-9]$")
FOLDER = re.compile(r"^[0-9a-zA-Z/!\-_.*'()]*$")
NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
ABFSS_URL = re.compile(
    r"^abfss://(?P<container>[a-z0-9](?!.*--)[a-z0-9-]{1,61}[a-z0-9])@(?P<account>[a-z0-9]{3,24})\.dfs\.core\.windows\.net/?$"
)
ENDPOINT = re.compile(r"^https?://[^/?#\s]+(/[^?#\s]*)?$")


class ConfigError(Exception):
    """A one-line, user-facing problem with the configuration: names the file, the field and the value."""


class FieldProblem(ValueError):
    """A cross-field problem found after parsing, located at a field so the one-line error can name it."""

    def __init__(self, loc: tuple[int | str, ...], message: str):
        self.loc = loc
        super().__init__(message)


def ajo_home() -> Path:
    """All state of the embedded default lives here: lake, exports and the Dagster instance."""
    return Path(os.environ.get("AJO_EXPORTS_HOME", ".ajo")).resolve()


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


class SettingsModel(BaseModel):
    """A section of exports.yaml: unknown keys are errors, values are frozen once read."""

    # a field's docstring is its description: exports.yaml's reference (`ajo-exports fields`) and the Dagster UI's
    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    def missing_secrets(self) -> list[str]:
        """Secret fields whose environment variable is not set here (review reports them before a run fails)."""
        return [
            f"{field} (${{{value.env_var}}})"
            for field, value in self
            if isinstance(value, SecretRef) and not os.environ.get(value.env_var)
        ]


class ConnectorSettings(SettingsModel):
    """The settings of one connector type (a destination or a source), tagged by `type` in exports.yaml.

    The same model is the runtime form: `resolved_from()` is a copy whose secret fields hold the secrets themselves,
    built by the connector's Dagster resource from its `EnvVar` fields; only that copy is ever opened."""

    @classmethod
    def type_name(cls) -> str:
        """The `type:` tag of this connector in exports.yaml (its `Literal`)."""
        return typing.get_args(cls.model_fields["type"].annotation)[0]

    @classmethod
    def resolved_from(cls, resource: object, skip: frozenset[str]) -> typing.Self:
        """The runtime copy from a resource's fields (validated when it was built; a secret is no `${VAR}` here)."""
        values = {name: getattr(resource, name) for name in cls.model_fields if name not in skip}
        return cls.model_construct(type=cls.type_name(), **values)


def field_reference(settings: type[ConnectorSettings]) -> list[tuple[str, str, str]]:
    """(field, what to give, description) of each exports.yaml field of a connector type, from its model alone."""
    rows = []
    for name, field in settings.model_fields.items():
        if name == "type":
            continue
        secret = "${VAR}" if is_secret(field.annotation) else ""
        if field.is_required():
            given = "required" + (f", {secret}" if secret else "")
        elif field.default is None or field.default == "":
            given = secret or "optional"
        else:
            given = f"default {field.default}"
        rows.append((name, given, " ".join((field.description or "").split())))
    return rows


def clean_folder(value: str) -> str:
    """A folder inside the destination's bucket or container: allowed characters only, no '..', no outer '/'."""
    if not FOLDER.match(value):
        raise ValueError("folders may hold only ASCII letters, digits and / ! - _ . * ' ( )")
    if ".." in value.split("/"):
        raise ValueError("folders may not contain '..'")
    return value.strip("/")


def check_name(value: str) -> str:
    """A destination's or a dataflow's name."""
    if not NAME.match(value):
        raise ValueError("use lowercase letters, digits, '-' and '_' (at most 63 characters)")
    return value


Name = Annotated[str, AfterValidator(check_name)]


def check_s3_bucket(value: str) -> str:
    if not S3_BUCKET.search(value):
        raise ValueError("S3 bucket names are 3-63 lowercase letters, digits, '-' or '.', not IP-shaped")
    return value


def check_gcs_bucket(value: str) -> str:
    if not GCS_BUCKET.match(value) or value.startswith("goog") or re.search("g[o0][o0]gle", value):
        raise ValueError("GCS bucket names are 3-63 of [a-z0-9-_.], not starting with 'goog' or containing 'google'")
    return value


def check_azure_container(value: str) -> str:
    if not AZURE_CONTAINER.match(value):
        raise ValueError("container names are 3-63 lowercase letters, digits and single hyphens")
    return value


def check_endpoint(value: str | None) -> str | None:
    if value is not None and not ENDPOINT.match(value):
        raise ValueError("endpoints are http(s)://host[:port][/path] URLs")
    return value


def is_secret(annotation: Any) -> bool:
    """A `${VAR}` field's annotation: `Secret` or `Secret | None`."""
    return annotation is SecretRef or SecretRef in typing.get_args(annotation)


def _plain(annotation: Any) -> Any:
    """A settings annotation as a Dagster config type: a `${VAR}` secret arrives as a `str` (an `EnvVar`), a `Literal`
    as its value's type. Connector fields are plain or `X | None`; validation stays with the settings model."""
    if annotation is SecretRef:
        return str
    if isinstance(annotation, UnionType) or typing.get_origin(annotation) is typing.Union:
        arms = tuple(_plain(arm) for arm in typing.get_args(annotation))
        return typing.Union[arms] if NoneType in arms else arms[0]  # noqa: UP007 - built from a tuple
    if typing.get_origin(annotation) is Literal:
        return type(typing.get_args(annotation)[0])
    return annotation


def derived_resource(settings: type[ConnectorSettings], base: type[T], skip: frozenset[str]) -> type[T]:
    """A Dagster resource class on `base` that mirrors `settings`' fields (annotations and defaults), so a
    connector's fields are declared once; validation stays with the settings model, which checked the values.
    `AmazonS3DestinationConfig` gives `AmazonS3Destination`."""
    annotations: dict[str, Any] = {}
    namespace: dict[str, Any] = {
        "__annotations__": annotations,
        "__module__": settings.__module__,
        "__doc__": settings.__doc__,
        "settings_class": settings,
    }
    for name, field in settings.model_fields.items():
        if name in skip:
            continue
        annotations[name] = _plain(field.annotation)
        default = ... if field.default is PydanticUndefined else field.default
        namespace[name] = Field(default, description=" ".join((field.description or "").split()) or None)
    return type(settings.__name__.removesuffix("Config"), (base,), namespace)


def resource_values(settings: ConnectorSettings, skip: frozenset[str],
                    secret: Callable[[SecretRef], object]) -> Iterator[tuple[str, object]]:
    """A settings model's set values for its Dagster resource; each `${VAR}` secret as `secret(ref)` (an EnvVar)."""
    for name, value in settings:
        if name not in skip and value is not None:
            yield name, secret(value) if isinstance(value, SecretRef) else value
