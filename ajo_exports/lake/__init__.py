"""The data lake the exports read from: the source interface and its source types (the sample generator is
`lake.generator`, imported where it is used: reading exports.yaml, as a receiver does, never pays for it).

Adding a source type is one new module and one line in `SOURCES`: exports.yaml's `source:` union (`config.py`) and
the Dagster resource (`lake.resource`) come from this list.
"""

from ajo_exports.lake.local import LocalLake, LocalSourceConfig, make_batch_id
from ajo_exports.lake.object_store import ObjectStoreSourceConfig
from ajo_exports.lake.source import Batch, DatasetSource, LakeError, Selection, SourceSettings

SOURCES: tuple[type[SourceSettings], ...] = (LocalSourceConfig, ObjectStoreSourceConfig)

__all__ = [
    "SOURCES",
    "Batch",
    "DatasetSource",
    "LakeError",
    "LocalLake",
    "make_batch_id",
    "Selection",
    "SourceSettings",
]
