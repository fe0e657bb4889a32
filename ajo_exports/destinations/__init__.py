"""Destination connections: one module per destination type behind the one Storage interface."""

from __future__ import annotations

import importlib

from dagster import EnvVar

from ajo_exports.config import DestinationConfig, SecretRef
from ajo_exports.destinations.base import DestinationError, DestinationResource, Storage, StoredObject

# destination type -> (module, resource class); imported on use so one SDK's import cost is paid only when used.
RESOURCES: dict[str, tuple[str, str]] = {
    "local": ("ajo_exports.destinations.local", "LocalDestination"),
    "amazon_s3": ("ajo_exports.destinations.amazon_s3", "AmazonS3Destination"),
    "azure_blob": ("ajo_exports.destinations.azure_blob", "AzureBlobDestination"),
    "adls_gen2": ("ajo_exports.destinations.adls_gen2", "AdlsGen2Destination"),
    "data_landing_zone": ("ajo_exports.destinations.data_landing_zone", "DataLandingZoneDestination"),
    "google_cloud_storage": ("ajo_exports.destinations.google_cloud_storage", "GoogleCloudStorageDestination"),
    "sftp": ("ajo_exports.destinations.sftp", "SftpDestination"),
}
NOT_RESOURCE_FIELDS = {"type", "max_concurrent_exports"}  # config only: the executor applies the limit


def resource_class(destination_type: str) -> type[DestinationResource]:
    module, name = RESOURCES[destination_type]
    return getattr(importlib.import_module(module), name)


def build_destination(config: DestinationConfig) -> DestinationResource:
    """The Dagster resource for a configured destination; `${VAR}` secrets become `EnvVar("VAR")`."""
    fields = {}
    for name, value in config:
        if name in NOT_RESOURCE_FIELDS or value is None:
            continue
        fields[name] = EnvVar(value.env_var) if isinstance(value, SecretRef) else value
    return resource_class(config.type)(**fields)


def open_destination(config: DestinationConfig) -> Storage:
    """Open a destination outside a Dagster run (CLI, sensors): resolve its `EnvVar` secrets as a run would."""
    return build_destination(config).process_config_and_initialize().open_storage()


__all__ = [
    "DestinationError",
    "DestinationResource",
    "Storage",
    "StoredObject",
    "build_destination",
    "open_destination",
    "resource_class",
]
