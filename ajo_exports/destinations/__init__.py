"""Destination connections: one module per destination type (its settings and its storage), and their registry.

Adding a destination type is one new module and one line in `DESTINATIONS`: exports.yaml's `type:` union
(`config.py`), the Dagster resources (`destinations.resource`) and the asset kinds all come from this list.
"""

from __future__ import annotations

from ajo_exports.destinations.adls_gen2 import AdlsGen2DestinationConfig
from ajo_exports.destinations.amazon_s3 import AmazonS3DestinationConfig
from ajo_exports.destinations.azure_blob import AzureBlobDestinationConfig
from ajo_exports.destinations.base import DestinationError, DestinationSettings, Storage, StoredObject
from ajo_exports.destinations.data_landing_zone import DataLandingZoneDestinationConfig
from ajo_exports.destinations.google_cloud_storage import GoogleCloudStorageDestinationConfig
from ajo_exports.destinations.local import LocalDestinationConfig
from ajo_exports.destinations.sftp import SftpDestinationConfig

DESTINATIONS: tuple[type[DestinationSettings], ...] = (
    LocalDestinationConfig,
    AmazonS3DestinationConfig,
    AzureBlobDestinationConfig,
    AdlsGen2DestinationConfig,
    DataLandingZoneDestinationConfig,
    GoogleCloudStorageDestinationConfig,
    SftpDestinationConfig,
)

__all__ = ["DESTINATIONS", "DestinationError", "DestinationSettings", "Storage", "StoredObject"]
