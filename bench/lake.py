"""Build the benchmark's lakes through the project's own lake API (`generate_batch` + `LocalLake.append_batch`).

Every batch holds recent events only (generated in the 6 hours before its ingestion), so the export's 365-day
filter keeps every row and ajo-exports, the floor and dlt all move exactly the same rows. Generating is the slow
part (~5 µs a row, one core); a larger lake reuses the batches of a smaller one (`pool`: read back and
appended again under a new batch ID and ingestion time) instead of generating them all anew.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import polars as pl
import pyarrow.parquet as pq

from ajo_exports.catalog import get_dataset
from ajo_exports.lake import LocalLake
from ajo_exports.lake.generator import generate_batch

DATASET = "ajo_message_feedback_event_dataset"


@dataclass
class LakeInfo:
    """A built lake of one dataset: where its batch files are and what building it cost."""

    root: Path
    slug: str
    rows: int
    files: list[str]
    bytes: int
    build_s: float
    generated_rows: int = 0
    generate_s: float = 0.0
    ingested: list[datetime] = field(default_factory=list)

    @property
    def generator_rows_per_s(self) -> float:
        return self.generated_rows / self.generate_s if self.generate_s else 0.0


def hourly_before_now(batches: int) -> Callable[[int], datetime]:
    """Batch k ingested k hours after a start `batches` hours ago: all in the past, all within a day or so."""
    start = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(hours=batches + 1)
    return lambda k: start + timedelta(hours=k)


def build_lake(
    root: Path,
    rows: int,
    batch_rows: int,
    *,
    slug: str = DATASET,
    pool: list[str] | None = None,
    ingest: Callable[[int], datetime] | None = None,
) -> LakeInfo:
    """A lake at `root` holding `rows` rows of `slug` in batches of `batch_rows` (the last one may be smaller)."""
    started = time.perf_counter()
    dataset = get_dataset(slug)
    lake = LocalLake(root)
    count = max(1, math.ceil(rows / batch_rows))
    when = ingest or hourly_before_now(count)
    info = LakeInfo(root=root, slug=slug, rows=0, files=[], bytes=0, build_s=0.0)
    pool_rows = {path: pq.read_metadata(path).num_rows for path in pool or []}
    for k in range(count):
        size = min(batch_rows, rows - k * batch_rows)
        ingested_at = when(k)
        reusable = [path for path, n in pool_rows.items() if n >= size]
        if reusable:
            frame = pl.read_parquet(reusable[k % len(reusable)]).head(size)
        else:
            began = time.perf_counter()
            frame = generate_batch(dataset, size, seed=k, batch_index=k + 1, now=ingested_at)
            info.generate_s += time.perf_counter() - began
            info.generated_rows += size
        batch = lake.append_batch(dataset, frame, ingested_at=ingested_at)
        del frame
        info.rows += batch.rows
        info.files.append(batch.path)
        info.ingested.append(ingested_at)
    info.bytes = sum(Path(path).stat().st_size for path in info.files)
    info.build_s = time.perf_counter() - started
    return info


def warm(files: list[str]) -> None:
    """Read the lake once so every case starts with it in the page cache (the first case would pay otherwise)."""
    for path in files:
        with open(path, "rb") as handle:
            while handle.read(8 * 1024 * 1024):
                pass
