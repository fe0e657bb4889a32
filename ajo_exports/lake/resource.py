"""The lake as a Dagster resource, derived from the source's settings model, so another source type (AEP's Data
Access API, a customer's lake) is one module in `lake/` and one line in `SOURCES`."""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import ClassVar

from dagster import ConfigurableResource, EnvVar

from ajo_exports.lake.source import DatasetSource, SourceSettings
from ajo_exports.settings import derived_resource, resource_values

NOT_RESOURCE_FIELDS = frozenset({"type"})


class LakeResource(ConfigurableResource):
    """The configured source: its settings' fields, secrets as `EnvVar` values resolved at run time."""

    settings_class: ClassVar[type[SourceSettings]]

    def settings(self) -> SourceSettings:
        return self.settings_class.resolved_from(self, NOT_RESOURCE_FIELDS)

    def open(self) -> DatasetSource:
        return self.settings().open_lake()


@cache
def resource_class(settings: type[SourceSettings]) -> type[LakeResource]:
    """The resource class of a source type, e.g. `ObjectStoreSource` for `ObjectStoreSourceConfig`."""
    return derived_resource(settings, LakeResource, NOT_RESOURCE_FIELDS)


def lake_resource(source: SourceSettings, home: Path) -> LakeResource:
    """The resource of exports.yaml's `source:`; `${VAR}` secrets become `EnvVar("VAR")`, resolved at run time."""
    values = dict(resource_values(source.at_home(home), NOT_RESOURCE_FIELDS, lambda ref: EnvVar(ref.env_var)))
    return resource_class(type(source))(**values)


def open_lake(source: SourceSettings, home: Path) -> DatasetSource:
    """Open the configured lake outside a Dagster run (CLI): resolve its `EnvVar` secrets as a run would."""
    return lake_resource(source, home).process_config_and_initialize().open()
