"""The lake as a Dagster resource, so another source (AEP's Data Access API, a customer's lake) can replace it."""

from __future__ import annotations

from pathlib import Path

from dagster import ConfigurableResource

from ajo_exports.lake.local import LocalLake
from ajo_exports.lake.source import DatasetSource


class LakeResource(ConfigurableResource):
    """The embedded sample lake: Parquet batches and a batch index per dataset under `root`."""

    root: str

    def open(self) -> DatasetSource:
        return LocalLake(Path(self.root))
