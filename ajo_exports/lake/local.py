"""A local, file-based stand-in for the AEP data lake: one folder per dataset, one Parquet file per batch.

Layout::

    <root>/<slug>/batch-<batchId>.parquet
    <root>/<slug>/_batches.json     # [{"batchId", "ingestedAt" (ISO-8601 Z), "rows", "file"}, ...]

The index is the source of truth for which batches exist, so a half-written Parquet file (the write is atomic via
``os.replace`` anyway) is never visible to exports.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, cast

import polars as pl

from ajo_exports.catalog import DATASETS, Dataset
from ajo_exports.lake.source import Batch, LakeError, SourceSettings
from ajo_exports.settings import ajo_home

__all__ = ["INDEX_FILE", "LocalLake", "LocalSourceConfig", "make_batch_id"]

INDEX_FILE = "_batches.json"
_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_SAFE_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


def make_batch_id(ingested_at: datetime, entropy: bytes | None = None) -> str:
    """A 26-char uppercase ULID like AEP's batch IDs; pass ``entropy`` (10 bytes) to make it deterministic."""
    millis = int(_utc(ingested_at).timestamp() * 1000) & ((1 << 48) - 1)
    rand = entropy if entropy is not None else secrets.token_bytes(10)
    if len(rand) < 10:
        raise ValueError("batch id entropy needs 10 bytes")
    value = (millis << 80) | int.from_bytes(rand[:10], "big")
    return "".join(_CROCKFORD[(value >> shift) & 31] for shift in range(125, -1, -5))


def _utc(moment: datetime) -> datetime:
    if moment.tzinfo is None:
        raise ValueError(f"datetime {moment.isoformat()} must be timezone-aware (UTC)")
    return moment.astimezone(UTC)


def select_batches(
    batches: list[Batch], ingested_from: datetime | None, ingested_until: datetime | None
) -> list[Batch]:
    """The batches ingested in [from, until), by ingestion time then ID: the one window rule of every lake."""
    lower = _utc(ingested_from) if ingested_from is not None else None
    upper = _utc(ingested_until) if ingested_until is not None else None
    selected = [
        b for b in batches if (lower is None or b.ingested_at >= lower) and (upper is None or b.ingested_at < upper)
    ]
    return sorted(selected, key=lambda b: (b.ingested_at, b.batch_id))


def _iso_z(moment: datetime) -> str:
    return _utc(moment).isoformat().replace("+00:00", "Z")


def _fields(dtype: pl.Struct) -> dict[str, pl.DataType]:
    return {f.name: f.dtype for f in dtype.fields}


def _schema_mismatch(expected: pl.Schema, actual: pl.Schema | dict[str, pl.DataType], prefix: str = "") -> str | None:
    """Describe the first column (dotted path) that differs, so the error points at the field to fix."""
    for name, dtype in expected.items():
        if name not in actual:
            return f"missing column {prefix}{name} ({dtype})"
        problem = _dtype_mismatch(f"{prefix}{name}", dtype, actual[name])
        if problem:
            return problem
    extra = [name for name in actual if name not in expected]
    return f"unexpected column {prefix}{extra[0]}" if extra else None


def _dtype_mismatch(path: str, expected: pl.DataType, got: pl.DataType) -> str | None:
    """Structs compare field by field and lists by their inner type, so the path reaches the nested field."""
    if isinstance(expected, pl.Struct) and isinstance(got, pl.Struct):
        return _schema_mismatch(pl.Schema(_fields(expected)), _fields(got), f"{path}.")
    if isinstance(expected, pl.List) and isinstance(got, pl.List):
        if isinstance(expected.inner, pl.Struct) and isinstance(got.inner, pl.Struct):
            return _dtype_mismatch(f"{path}[]", expected.inner, got.inner)
    return None if expected == got else f"column {path} has type {got}, expected {expected}"


def _entry_problem(entry: object) -> str | None:
    """What is wrong with one index entry, so a hand-edited or damaged index fails as one line, not a traceback."""
    if not isinstance(entry, dict):
        return "not an object with batchId, ingestedAt, rows and file"
    missing = [key for key in ("batchId", "ingestedAt", "rows", "file") if key not in entry]
    if missing:
        return f"missing {', '.join(missing)}"
    if not isinstance(entry["batchId"], str) or not _SAFE_ID.match(entry["batchId"]):
        return f"batchId {entry['batchId']!r} is not 1-64 letters, digits, '-' or '_'"
    try:
        moment = datetime.fromisoformat(str(entry["ingestedAt"]))
    except ValueError:
        return f"ingestedAt {entry['ingestedAt']!r} is not an ISO-8601 time"
    if moment.tzinfo is None:
        return f"ingestedAt {entry['ingestedAt']!r} has no time zone (write UTC, ending in Z)"
    if not isinstance(entry["rows"], int) or isinstance(entry["rows"], bool) or entry["rows"] < 0:
        return f"rows {entry['rows']!r} is not a whole number"
    name = entry["file"]
    if not isinstance(name, str) or not name or "/" in name or "\\" in name or name.startswith("."):
        return f"file {name!r} is not a file name inside the dataset's folder"
    return None


def checked_index(entries: object, where: str, dataset: Dataset) -> list[dict[str, Any]]:
    """A parsed batch index, every entry checked: the index format of every lake, local or on object storage."""
    if not isinstance(entries, list):
        raise LakeError(f"batch index {where} of dataset {dataset.slug} must be a JSON list of batches")
    for number, entry in enumerate(entries):
        problem = _entry_problem(entry)
        if problem:
            raise LakeError(f"batch index {where} of dataset {dataset.slug}: entry {number}: {problem}")
    return entries


def batch_of(dataset: Dataset, entry: dict[str, Any], path: str) -> Batch:
    """The Batch of a checked index entry whose file is at `path`."""
    return Batch(
        dataset_slug=dataset.slug,
        batch_id=entry["batchId"],
        ingested_at=datetime.fromisoformat(entry["ingestedAt"]).astimezone(UTC),
        rows=int(entry["rows"]),
        path=path,
    )


def _sort_key(entry: dict[str, Any]) -> tuple[datetime, str]:
    return datetime.fromisoformat(entry["ingestedAt"]).astimezone(UTC), entry["batchId"]


class LocalLake:
    """The local Parquet lake: implements :class:`~ajo_exports.lake.source.DatasetSource` plus writes."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def __repr__(self) -> str:
        return f"LocalLake({str(self.root)!r})"

    # --- paths and index -------------------------------------------------------------------------------------

    def _dir(self, dataset: Dataset) -> Path:
        return self.root / dataset.slug

    def _index_path(self, dataset: Dataset) -> Path:
        return self._dir(dataset) / INDEX_FILE

    def _read_index(self, dataset: Dataset) -> list[dict[str, Any]]:
        path = self._index_path(dataset)
        if not path.exists():
            raise LakeError(
                f"lake at {self.root} has no batches for dataset {dataset.slug}; run `ajo-exports lake seed` "
                f"(--dataset {dataset.slug} seeds only it): its batch index {path} is missing"
            )
        try:
            entries = json.loads(path.read_text(encoding="utf-8"))
        except OSError as exc:
            raise LakeError(f"batch index {path} of dataset {dataset.slug} cannot be read: {exc.strerror}") from None
        except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError
            raise LakeError(f"batch index {path} of dataset {dataset.slug} is not valid JSON: {exc}") from None
        return checked_index(entries, str(path), dataset)

    def _write_index(self, dataset: Dataset, entries: list[dict[str, Any]]) -> None:
        path = self._index_path(dataset)
        tmp = path.with_name(f".{INDEX_FILE}.tmp-{os.getpid()}")
        tmp.write_text(json.dumps(entries, indent=2) + "\n", encoding="utf-8")
        os.replace(tmp, path)

    def _batch(self, dataset: Dataset, entry: dict[str, Any]) -> Batch:
        return batch_of(dataset, entry, str(self._dir(dataset) / entry["file"]))

    # --- state ------------------------------------------------------------------------------------------------

    def is_seeded(self, dataset: Dataset) -> bool:
        """Whether the dataset has a batch index (it may still hold zero batches)."""
        return self._index_path(dataset).is_file()

    def has_data(self) -> bool:
        """Whether any catalog dataset has a batch index under the root."""
        return any(self.is_seeded(d) for d in DATASETS)

    def clear(self) -> None:
        """Remove the catalog datasets' folders; anything else under the root is left alone."""
        for dataset in DATASETS:
            folder = self._dir(dataset)
            if folder.is_dir():
                shutil.rmtree(folder)

    # --- writes -----------------------------------------------------------------------------------------------

    def append_batch(
        self,
        dataset: Dataset,
        frame: pl.DataFrame,
        ingested_at: datetime,
        batch_id: str | None = None,
    ) -> Batch:
        """Add one ingestion batch: validate against the schema, write Parquet atomically, then publish in the index."""
        ingested_at = _utc(ingested_at)
        problem = _schema_mismatch(dataset.schema, frame.schema)
        if problem:
            raise LakeError(f"batch for dataset {dataset.slug} does not match its schema: {problem}")
        frame = frame.select(list(dataset.schema.names()))
        batch_id = batch_id or make_batch_id(ingested_at)
        if not _SAFE_ID.match(batch_id):
            raise ValueError(f"batch id {batch_id!r} must be 1-64 letters, digits, '-' or '_'")

        folder = self._dir(dataset)
        folder.mkdir(parents=True, exist_ok=True)
        entries = self._read_index(dataset) if self.is_seeded(dataset) else []
        if any(entry["batchId"] == batch_id for entry in entries):
            raise LakeError(f"dataset {dataset.slug} already has batch {batch_id}")

        file_name = f"batch-{batch_id}.parquet"
        tmp = folder / f".{file_name}.tmp-{os.getpid()}"
        frame.write_parquet(tmp, compression="zstd", statistics=True)
        os.replace(tmp, folder / file_name)

        entry = {"batchId": batch_id, "ingestedAt": _iso_z(ingested_at), "rows": frame.height, "file": file_name}
        self._write_index(dataset, sorted([*entries, entry], key=_sort_key))  # a late batch lands in time order
        return self._batch(dataset, entry)

    # --- DatasetSource ----------------------------------------------------------------------------------------

    def list_batches(
        self,
        dataset: Dataset,
        ingested_from: datetime | None = None,
        ingested_until: datetime | None = None,
    ) -> list[Batch]:
        """Batches ingested in [from, until), oldest first; raises LakeError when the dataset was never seeded."""
        batches = [self._batch(dataset, entry) for entry in self._read_index(dataset)]
        return select_batches(batches, ingested_from, ingested_until)

    def read(
        self, dataset: Dataset, batch: Batch, start: int = 0, length: int | None = None, chunk_rows: int = 10_000
    ) -> Iterator[pl.DataFrame]:
        """Only the row groups that hold the range are decoded, ``chunk_rows`` at a time (pyarrow's reader, which
        decodes a row group incrementally; memory stays a few chunks whatever the batch's size)."""
        import pyarrow.parquet as pq  # here, not at import: reading exports.yaml (a receiver) never pays for it

        reader = pq.ParquetFile(batch.path, pre_buffer=False, buffer_size=1 << 20)
        metadata = reader.metadata
        end = metadata.num_rows if length is None else min(metadata.num_rows, start + length)
        groups, offset, position = [], 0, None
        for index in range(metadata.num_row_groups):
            rows = metadata.row_group(index).num_rows
            if offset + rows > start and offset < end:
                position = offset if position is None else position
                groups.append(index)
            offset += rows
        if position is None:
            return
        schema = dict(dataset.schema)
        for chunk in reader.iter_batches(batch_size=chunk_rows, row_groups=groups, columns=list(schema)):
            low, high = max(start - position, 0), min(end - position, chunk.num_rows)
            position += chunk.num_rows
            if high > low:
                yield cast(pl.DataFrame, pl.from_arrow(chunk.slice(low, high - low))).cast(schema)
            if position >= end:
                return

    def scan(self, dataset: Dataset, batches: Sequence[Batch]) -> pl.LazyFrame:
        """Lazy scan of exactly ``batches``; each file's footer is checked first so corruption fails here, clearly."""
        if not batches:
            return pl.LazyFrame(schema=dataset.schema)
        files: list[str] = []
        for batch in batches:
            if batch.dataset_slug != dataset.slug:
                raise LakeError(f"batch {batch.batch_id} belongs to {batch.dataset_slug}, not {dataset.slug}")
            if not Path(batch.path).is_file():
                raise LakeError(
                    f"batch file {batch.path} of dataset {dataset.slug} is listed in {INDEX_FILE} but missing: "
                    f"restore it or remove batch {batch.batch_id} from the index"
                )
            try:
                file_schema = pl.read_parquet_schema(batch.path)
            except Exception as exc:  # noqa: BLE001 - any reader failure means an unusable file
                reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                raise LakeError(
                    f"batch file {batch.path} of dataset {dataset.slug} is not readable Parquet: {reason}"
                ) from exc
            problem = _schema_mismatch(dataset.schema, file_schema)
            if problem:
                raise LakeError(f"batch file {batch.path} of dataset {dataset.slug} does not match: {problem}")
            files.append(batch.path)
        return pl.scan_parquet(files).select([pl.col(name).cast(dtype) for name, dtype in dataset.schema.items()])


class LocalSourceConfig(SourceSettings):
    """The embedded local lake (the default): Parquet batches and a batch index per dataset under `path`."""

    type: Literal["local"]
    path: str | None = None
    """The lake's folder; default `<AJO_EXPORTS_HOME>/lake`."""

    def lake_root(self, home: Path) -> Path:
        return Path(self.path).expanduser().resolve() if self.path else home / "lake"

    def at_home(self, home: Path) -> LocalSourceConfig:
        return self.model_copy(update={"path": str(self.lake_root(home))})

    def open_lake(self) -> LocalLake:
        return LocalLake(self.lake_root(ajo_home()))
