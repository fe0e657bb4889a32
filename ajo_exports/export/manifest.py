"""AEP's export manifest, plus what AEP leaves out (rows, sha256, schema) so delivery can be verified."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from datetime import datetime

import polars as pl


@dataclass(frozen=True)
class ExportedFile:
    sinkPath: str  # noqa: N815 - AEP's field names
    name: str
    size: int
    rows: int
    sha256: str
    nativeChecksum: str | None = None  # noqa: N815


@dataclass(frozen=True)
class Manifest:
    flowRunId: str  # noqa: N815
    scheduledTime: str  # noqa: N815
    exportResults: list[ExportedFile]  # noqa: N815
    datasetId: str  # noqa: N815
    dataflow: str
    destinationId: str  # noqa: N815
    totalRows: int  # noqa: N815
    format: str
    compression: str
    schema: dict[str, str] = field(default_factory=dict)
    batchIds: list[str] = field(default_factory=list)  # noqa: N815 - the lake batches the window took

    def to_json(self) -> bytes:
        return json.dumps(asdict(self), indent=2).encode()

    @classmethod
    def from_json(cls, data: bytes) -> Manifest:
        raw = json.loads(data)
        raw["exportResults"] = [ExportedFile(**item) for item in raw["exportResults"]]
        return cls(**raw)


def manifest_name(destination_id: str, run_id: str) -> str:
    return f"manifest-{destination_id}-{run_id}.json"


def is_manifest(key: str) -> bool:
    name = key.rsplit("/", 1)[-1]
    return name.startswith("manifest-") and name.endswith(".json")


def scheduled_time(export_time: datetime) -> str:
    return export_time.strftime("%Y-%m-%dT%H:%M:%SZ")


def schema_json(schema: pl.Schema) -> dict[str, str]:
    return {name: str(dtype) for name, dtype in schema.items()}
