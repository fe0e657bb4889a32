"""The lake as a Dagster resource, so another source (AEP's Data Access API, a customer's lake) can replace it."""

from __future__ import annotations

from pathlib import Path

from dagster import ConfigurableResource, EnvVar

from ajo_exports.config import LocalSourceConfig, SecretRef, SourceConfig
from ajo_exports.lake.local import LocalLake
from ajo_exports.lake.object_store import ObjectStoreLake, storage_options
from ajo_exports.lake.source import DatasetSource


class LakeResource(ConfigurableResource):
    """The embedded sample lake: Parquet batches and a batch index per dataset under `root`."""

    root: str

    def open(self) -> DatasetSource:
        return LocalLake(Path(self.root))


class ObjectStoreLakeResource(LakeResource):
    """The lake under an object-store URL (`source: {type: object_store}`); secrets arrive as `EnvVar` values."""

    root: str = ""
    url: str
    endpoint_url: str | None = None
    region: str | None = None
    access_key_id: str | None = None
    secret_access_key: str | None = None
    account_name: str | None = None
    account_key: str | None = None
    blob_endpoint: str | None = None
    service_account_json: str | None = None

    def open(self) -> DatasetSource:
        fields = self.model_dump(exclude={"root", "url"})
        return ObjectStoreLake(self.url, storage_options(self.url, **fields))


def lake_resource(source: SourceConfig, home: Path) -> LakeResource:
    """The resource of exports.yaml's `source:`; `${VAR}` secrets become `EnvVar("VAR")`, resolved at run time."""
    if isinstance(source, LocalSourceConfig):
        return LakeResource(root=str(source.lake_root(home)))
    fields = {
        name: EnvVar(value.env_var) if isinstance(value, SecretRef) else value
        for name, value in source
        if name != "type" and value is not None
    }
    return ObjectStoreLakeResource(**fields)


def open_lake(source: SourceConfig, home: Path) -> LocalLake | ObjectStoreLake:
    """Open the configured lake outside a Dagster run (CLI): resolve its `EnvVar` secrets as a run would."""
    lake = lake_resource(source, home).process_config_and_initialize().open()
    assert isinstance(lake, LocalLake | ObjectStoreLake)
    return lake
