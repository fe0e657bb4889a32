"""The data lake the exports read from: the source interface, the local Parquet lake and its seed generator."""

from ajo_exports.lake.generator import generate_batch, seed_lake
from ajo_exports.lake.local import LocalLake, make_batch_id
from ajo_exports.lake.source import Batch, DatasetSource, LakeError, Selection

__all__ = [
    "Batch",
    "DatasetSource",
    "LakeError",
    "LocalLake",
    "generate_batch",
    "make_batch_id",
    "seed_lake",
    "Selection",
]
