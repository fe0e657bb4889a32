"""The read-side interface every dataset source implements.

Exports only need two things from a data lake: which ingestion batches exist in a time window, and a lazy scan of
some of them. Keeping that behind a Protocol lets AEP's Data Access API or a customer's own lake replace the local
Parquet lake without touching the export code.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Protocol, runtime_checkable

import polars as pl

from ajo_exports.catalog import Dataset
from ajo_exports.settings import ConnectorSettings

__all__ = ["Batch", "DatasetSource", "LakeError", "Selection"]


@dataclass(frozen=True)
class Batch:
    """One ingestion batch of a dataset; incremental exports watermark on ``ingested_at``."""

    dataset_slug: str
    batch_id: str
    ingested_at: datetime  # tz-aware UTC
    rows: int
    path: str  # where the batch lives (a file path for the local lake)


class LakeError(Exception):
    """A user-facing, one-line problem with the lake (missing index, corrupt file, schema mismatch)."""


class SourceSettings(ConnectorSettings):
    """Where the datasets are read from: exports.yaml's `source:`, one settings model per source type (tagged by
    `type`), registered in `ajo_exports.lake.SOURCES`. `open_lake()` runs on the resolved copy, as a destination's
    `open_storage()` does."""

    def at_home(self, home: Path) -> SourceSettings:
        """These settings with defaults that depend on AJO_EXPORTS_HOME filled in (the local lake's folder)."""
        return self

    def open_lake(self) -> DatasetSource:
        raise NotImplementedError


@runtime_checkable
class DatasetSource(Protocol):
    """Where dataset rows come from."""

    def list_batches(
        self,
        dataset: Dataset,
        ingested_from: datetime | None = None,
        ingested_until: datetime | None = None,
    ) -> list[Batch]:
        """Batches ingested in the half-open window [from, until), sorted by ingested_at then batch_id."""
        ...

    def scan(self, dataset: Dataset, batches: Sequence[Batch]) -> pl.LazyFrame:
        """Lazily scan only ``batches``; rows conform to ``dataset.schema`` (empty frame for zero batches)."""
        ...

    def read(
        self, dataset: Dataset, batch: Batch, start: int = 0, length: int | None = None, chunk_rows: int = 10_000
    ) -> Iterator[pl.DataFrame]:
        """Rows [start, start + length) of one batch, in order, as frames of at most ``chunk_rows`` rows: the
        bounded read that exports use (a lazy scan's streaming engine reads ahead and grows with the batch)."""
        ...


@dataclass(frozen=True)
class Selection:
    """The rows of one export window: some batches of a dataset, and for event datasets only rows since a time.

    The writer reads it one batch (and row range) at a time, never as one scan over the window, so it can cut
    bounded part files, encode several at once and keep memory independent of the window's size."""

    source: DatasetSource
    dataset: Dataset
    batches: tuple[Batch, ...]
    events_since: datetime | None = None

    @property
    def schema(self) -> pl.Schema:
        return self.dataset.schema

    @property
    def predicate(self) -> pl.Expr | None:
        return pl.col("timestamp") >= self.events_since if self.events_since is not None else None

    def pieces(self) -> list[pl.LazyFrame]:
        """One lazy scan per batch, in ingestion order, before the predicate."""
        return [self.source.scan(self.dataset, [batch]) for batch in self.batches]

    def read(self, piece: int, start: int, length: int) -> Iterator[pl.DataFrame]:
        """Rows [start, start + length) of the piece-th batch, before the predicate, in bounded chunks."""
        return self.source.read(self.dataset, self.batches[piece], start, length)

    def frame(self) -> pl.LazyFrame:
        """The whole window as one lazy frame (for reading it back; exports use `pieces`)."""
        frame = self.source.scan(self.dataset, self.batches)
        return frame if self.predicate is None else frame.filter(self.predicate)
