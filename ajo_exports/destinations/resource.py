"""Dagster's view of a destination: a resource derived from the destination's settings model, never redeclared.

The resource carries the settings' fields with each `${VAR}` secret as a Dagster `EnvVar`, so Dagster resolves it at
run time and never shows it; opening the resource rebuilds the settings model with the secrets resolved and lets
the destination's own module open its storage.
"""

from __future__ import annotations

from functools import cache
from typing import ClassVar

from dagster import ConfigurableResource, EnvVar

from ajo_exports.destinations.base import DestinationSettings, Storage
from ajo_exports.settings import derived_resource, resource_values

# exports.yaml only: `type` is the resource's class, and the executor applies max_concurrent_exports.
NOT_RESOURCE_FIELDS = frozenset({"type", "max_concurrent_exports"})


class DestinationResource(ConfigurableResource):
    """A destination connection as a Dagster resource: typed fields (secrets as EnvVar) that open a Storage."""

    settings_class: ClassVar[type[DestinationSettings]]
    # name, folder, pgp_public_key and each type's own fields come from the settings model (`resource_class`)
    name: str

    @property
    def destination_type(self) -> str:
        return self.settings_class.type_name()

    def settings(self) -> DestinationSettings:
        """The destination's settings model with its secrets resolved (only inside a run, or `open_destination`)."""
        return self.settings_class.resolved_from(self, NOT_RESOURCE_FIELDS)

    def open_storage(self) -> Storage:
        return self.settings().open_storage()


@cache
def resource_class(settings: type[DestinationSettings]) -> type[DestinationResource]:
    """The resource class of a destination type, e.g. `AmazonS3Destination` for `AmazonS3DestinationConfig`."""
    return derived_resource(settings, DestinationResource, NOT_RESOURCE_FIELDS)


def build_destination(config: DestinationSettings) -> DestinationResource:
    """The Dagster resource for a configured destination; `${VAR}` secrets become `EnvVar("VAR")`."""
    values = dict(resource_values(config, NOT_RESOURCE_FIELDS, lambda ref: EnvVar(ref.env_var)))
    return resource_class(type(config))(**values)


def open_destination(config: DestinationSettings) -> Storage:
    """Open a destination outside a Dagster run (CLI, sensors): resolve its `EnvVar` secrets as a run would."""
    return build_destination(config).process_config_and_initialize().open_storage()


__all__ = ["DestinationResource", "build_destination", "open_destination", "resource_class"]
