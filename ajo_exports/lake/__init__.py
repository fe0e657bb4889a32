"""The data lake the exports read from: the source interface, its source types and the seed generator.

Adding a source type is one new module and one line in `SOURCES`: exports.yaml's `source:` union (`config.py`) and
the Dagster resource (`lake.resource`) come from this list.
"""

from ajo_exports.lake.generator import generate_batch, seed_lake
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
    "generate_batch",
    "make_batch_id",
    "seed_lake",
    "Selection",
    "SourceSettings",
]
