"""File formats and the bounded part-file writer.

A part file is encoded from a stream of bounded chunks (a few batch row ranges) by polars' streaming sinks, which
compress Parquet columns on every core. An encoder never holds more than a few chunks and a row group in memory,
however large the dataset is. (pyarrow's writer was measured too: it dictionary-encodes nested strings, so its
snappy files are ~35% smaller, but it is single-threaded per file, 1.4x the CPU for gzip, and two at once exceed
the memory bound.)
"""

from __future__ import annotations

import gzip
from collections.abc import Callable, Iterator
from pathlib import Path

import polars as pl
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
SINK_CODECS = {
    Compression.NONE: "uncompressed",
    Compression.GZIP: "gzip",
    Compression.ZSTD: "zstd",
    Compression.SNAPPY: "snappy",
}
Chunks = Callable[[], Iterator[pl.DataFrame]]


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
    frame.sink_parquet(
        path,
        compression=SINK_CODECS[compression],
        compression_level=GZIP_LEVEL if compression is Compression.GZIP else None,
        row_group_size=ROW_GROUP_ROWS,
    )


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


def encode_part(
    chunks: Chunks,
    schema: pl.Schema,
    rows: int,
    stem: Path,
    file_format: FileFormat,
    compression: Compression,
    max_bytes: int,
) -> list[tuple[Path, int]]:
    """Encode one planned part or member (`rows` rows, read by `chunks`, which can be called again) into local
    files of at most `max_bytes` each, with their row counts."""
    return _sink_part(as_lazy(chunks, schema), rows, stem, file_format, compression, max_bytes)


def read_part(path: Path, name: str) -> pl.DataFrame:
    """Read a delivered part file back (tests, verification): by its extension, as AEP consumers would."""
    if name.endswith(".json.gz"):
        with gzip.open(path, "rb") as stream:
            return pl.read_ndjson(stream.read()) if path.stat().st_size else pl.DataFrame()
    return pl.read_parquet(path)
