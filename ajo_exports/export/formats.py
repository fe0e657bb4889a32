"""File formats and the bounded part-file writer.

A part file is encoded from a stream of bounded chunks (a few batch row ranges): by polars' streaming sinks, which
compress columns on every core (gzip, NDJSON), or by pyarrow's writer (snappy, zstd, none). An encoder never holds
more than a row group of it in memory, however large the dataset is.
"""

from __future__ import annotations

import gzip
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO

import polars as pl
import pyarrow.parquet as pq
from polars.io.plugins import register_io_source

from ajo_exports.config import Compression, FileFormat

# gzip's level 9 (the default of pyarrow and of Python's gzip) is 2.4x slower than 6 for <1% smaller files.
GZIP_LEVEL = 6
EXTENSIONS: dict[tuple[FileFormat, Compression], str] = {
    (FileFormat.JSON, Compression.GZIP): "json.gz",
    (FileFormat.PARQUET, Compression.NONE): "parquet",
    (FileFormat.PARQUET, Compression.GZIP): "gz.parquet",
    (FileFormat.PARQUET, Compression.ZSTD): "zstd.parquet",
    (FileFormat.PARQUET, Compression.SNAPPY): "snappy.parquet",
}


def extension(file_format: FileFormat, compression: Compression) -> str:
    try:
        return EXTENSIONS[(file_format, compression)]
    except KeyError:
        raise ValueError(f"{file_format} exports do not support compression {compression}") from None


# Rows per Parquet row group: what an encoder buffers before it compresses; 20k rows keep polars' sink near 500 MB.
ROW_GROUP_ROWS = 20_000
# pyarrow's writer holds one row group of its own; 50k rows give its dictionaries room at ~40 MB per encoder.
ARROW_ROW_GROUP_ROWS = 50_000
ARROW_CODECS = {Compression.NONE: "none", Compression.ZSTD: "zstd", Compression.SNAPPY: "snappy"}
Chunks = Callable[[], Iterator[pl.DataFrame]]


def uses_polars_sink(file_format: FileFormat, compression: Compression) -> bool:
    """Which encoder is fastest for a bounded part, measured on XDM-shaped rows (bench/RESULTS.md).

    gzip is CPU-bound: polars' deflate on every core is ~1.5x cheaper than pyarrow's and wins despite files ~7%
    larger; NDJSON only polars writes. For the fast codecs the read dominates, and pyarrow dictionary-encodes
    nested strings, which polars does not (snappy files ~35% smaller), so pyarrow writes those."""
    return file_format is FileFormat.JSON or compression is Compression.GZIP


def as_lazy(chunks: Chunks, schema: pl.Schema) -> pl.LazyFrame:
    """A lazy frame whose source is the chunk generator: polars pulls a chunk only when its sink has room, so an
    encoder holds a few chunks and a row group, never the part."""

    def generate(
        with_columns: list[str] | None, predicate: pl.Expr | None, n_rows: int | None, batch_size: int | None
    ) -> Iterator[pl.DataFrame]:
        left = n_rows
        for chunk in chunks():
            if predicate is not None:
                chunk = chunk.filter(predicate)
            if with_columns is not None:
                chunk = chunk.select(with_columns)
            if left is not None:
                chunk = chunk.head(left)
                left -= chunk.height
            if chunk.height:
                yield chunk
            if left == 0:
                return

    return register_io_source(generate, schema=schema)


def _sink(frame: pl.LazyFrame, path: Path, file_format: FileFormat, compression: Compression) -> None:
    if file_format is FileFormat.JSON:
        frame.sink_ndjson(path, compression="gzip", compression_level=GZIP_LEVEL, check_extension=False)
        return
    frame.sink_parquet(path, compression="gzip", compression_level=GZIP_LEVEL, row_group_size=ROW_GROUP_ROWS)


def _sink_part(
    frame: pl.LazyFrame, rows: int, stem: Path, file_format: FileFormat, compression: Compression, max_bytes: int
) -> list[tuple[Path, int]]:
    """polars' sinks cannot stop at a byte size: a part whose encoding exceeds the bound is encoded again as
    evenly split slices (rare with AEP's 256 MB default), so both bounds hold for every delivered file."""
    path = stem.with_name(f"{stem.name}.{extension(file_format, compression)}")
    _sink(frame, path, file_format, compression)
    size = path.stat().st_size
    if size <= max_bytes or rows <= 1:
        return [(path, rows)]
    path.unlink()
    slices = min(rows, -(-size // max_bytes) + 1)
    step = -(-rows // slices)
    files: list[tuple[Path, int]] = []
    for index, offset in enumerate(range(0, rows, step)):
        taken = min(step, rows - offset)
        part = stem.with_name(f"{stem.name}-{index}")
        files.extend(_sink_part(frame.slice(offset, taken), taken, part, file_format, compression, max_bytes))
    return files


def _arrow_part(chunks: Chunks, stem: Path, compression: Compression, max_bytes: int) -> list[tuple[Path, int]]:
    """Row groups of ARROW_ROW_GROUP_ROWS rows; a file is closed as soon as it reaches the byte bound."""
    files: list[tuple[Path, int]] = []
    writer: pq.ParquetWriter | None = None
    sink: IO[bytes] | None = None
    rows = 0

    def close() -> None:
        nonlocal writer, sink, rows
        if writer is not None and sink is not None:
            writer.close()
            sink.close()
            files.append((Path(sink.name), rows))
        writer, sink, rows = None, None, 0

    def write(pending: list[pl.DataFrame]) -> None:
        nonlocal writer, sink, rows
        table = pl.concat(pending).to_arrow()
        if writer is None:
            name = f"{stem.name}-{len(files)}.{extension(FileFormat.PARQUET, compression)}"
            sink = stem.with_name(name).open("wb")
            writer = pq.ParquetWriter(sink, table.schema, compression=ARROW_CODECS[compression])
        writer.write_table(table, row_group_size=table.num_rows)
        rows += table.num_rows
        if sink is not None and sink.tell() >= max_bytes:
            close()

    pending: list[pl.DataFrame] = []
    for chunk in chunks():
        pending.append(chunk)
        if sum(c.height for c in pending) >= ARROW_ROW_GROUP_ROWS:
            write(pending)
            pending = []
    if pending:
        write(pending)
    close()
    return files


def encode_part(
    chunks: Chunks,
    schema: pl.Schema,
    rows: int,
    stem: Path,
    file_format: FileFormat,
    compression: Compression,
    max_bytes: int,
) -> list[tuple[Path, int]]:
    """Encode one planned part (`rows` rows, read by `chunks`, which can be called again) into local files of at
    most `max_bytes` each (a file of one row group may exceed it), with their row counts."""
    if uses_polars_sink(file_format, compression):
        return _sink_part(as_lazy(chunks, schema), rows, stem, file_format, compression, max_bytes)
    return _arrow_part(chunks, stem, compression, max_bytes)


def read_part(path: Path, name: str) -> pl.DataFrame:
    """Read a delivered part file back (tests, verification): by its extension, as AEP consumers would."""
    if name.endswith(".json.gz"):
        with gzip.open(path, "rb") as stream:
            return pl.read_ndjson(stream.read()) if path.stat().st_size else pl.DataFrame()
    return pl.read_parquet(path)
