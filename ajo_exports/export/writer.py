"""Deliver one dataset's export window to a destination: data files first, manifest last.

The order is what makes delivery atomic for a consumer who waits for the manifest:
0. record the attempt (a marker, see `attempts.py`),
1. remove the window's previous manifest (the folder stops looking complete),
2. cut the window's rows into bounded part files and publish each as soon as it is encoded,
3. remove the previous export's part files that the new set does not contain,
4. publish the manifest, then remove the marker.
A failure before 4 leaves no manifest and removes what this attempt published and the previous files it
orphaned; what it cannot remove (the connection is gone, the process was killed) its marker names, and the next
export to the destination removes it. A rerun of the same window replaces the folder exactly.

Throughput and memory: the parts are planned before anything is encoded (row counts come from batch metadata,
or from the event timestamps alone), so each part is an independent, bounded read of a few batch row ranges.
Parts are encoded by polars' multi-threaded sinks in a small pool while the calling thread hashes and uploads
the previous ones, with at most `encoders + 1` parts in flight, so memory depends on the part and batch sizes,
never on the size of the window.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import polars as pl

from ajo_exports.config import Compression, FileFormat
from ajo_exports.destinations.base import Storage, file_sha256, join_key
from ajo_exports.export.attempts import Attempt, begin_attempt, end_attempt, leave_attempt
from ajo_exports.export.encryption import ENCRYPTED_SUFFIX, Encryptor
from ajo_exports.export.formats import encode_part, extension
from ajo_exports.export.manifest import (
    ExportedFile,
    Manifest,
    is_manifest,
    manifest_name,
    scheduled_time,
    schema_json,
)
from ajo_exports.lake import Selection

log = logging.getLogger(__name__)
CHUNK_ROWS = 10_000  # rows per chunk an encoder pulls: a few of them are all it holds
MEMBER_ROWS = 50_000  # rows per NDJSON gzip member: ~10 MB compressed, ~100 MB to encode


@dataclass(frozen=True)
class ExportSpec:
    """What to write and where, for one dataset and one export window."""

    dataset_id: str
    dataflow: str
    destination_id: str
    folder: str  # rendered key prefix of the window, e.g. "<datasetId>/exportTime=202611290200"
    export_time: datetime
    run_id: str
    file_format: FileFormat = FileFormat.PARQUET
    compression: Compression = Compression.GZIP
    max_rows_per_file: int = 1_000_000
    max_bytes_per_file: int = 256 * 1024 * 1024
    write_manifest: bool = True
    dedicated_folder: bool = True  # the folder holds only this dataset's window (template has both macros)
    pgp_public_key: str | None = None  # Base64 armoured key: every data file is encrypted to it and gains .gpg
    encoders: int | None = None  # parts encoded at once; None: by format (see `default_encoders`)


@dataclass
class ExportProgress:
    """How far an export is: what has been published so far, out of the rows it planned."""

    rows: int
    bytes: int
    parts: int
    planned_rows: int
    seconds: float

    @property
    def rows_per_second(self) -> float:
        return self.rows / self.seconds if self.seconds > 0 else 0.0


@dataclass
class ExportResult:
    folder: str
    files: list[ExportedFile] = field(default_factory=list)
    keys: list[str] = field(default_factory=list)
    manifest_key: str | None = None
    rows: int = 0
    bytes: int = 0
    seconds: float = 0.0
    removed: list[str] = field(default_factory=list)

    @property
    def mb_per_second(self) -> float:
        return (self.bytes / 1_000_000) / self.seconds if self.seconds > 0 else 0.0


@dataclass(frozen=True)
class RowRange:
    """Rows [start, start + length) of one piece, before the predicate; `rows` of them pass it."""

    piece: int
    start: int
    length: int
    rows: int


@dataclass(frozen=True)
class PartPlan:
    """One part file's rows, as members: slices encoded independently (in parallel) and concatenated in order.
    A Parquet part is one member; an NDJSON gzip part is several gzip members, as pigz writes them."""

    members: tuple[tuple[RowRange, ...], ...]

    @property
    def rows(self) -> int:
        return sum(r.rows for member in self.members for r in member)


@dataclass(frozen=True)
class Member:
    """A unit of encoding work: member `index` of part `part`, and whether it closes the part."""

    part: int
    index: int
    last: bool
    ranges: tuple[RowRange, ...]

    @property
    def rows(self) -> int:
        return sum(r.rows for r in self.ranges)


def default_encoders(file_format: FileFormat) -> int:
    """polars' Parquet sink already spreads one part over every core (it compresses columns in parallel), so a
    second part at once would only add memory; NDJSON gzip members compress on one thread each, one per core."""
    return max(1, os.cpu_count() or 1) if file_format is FileFormat.JSON else 1


def member_rows(file_format: FileFormat, max_rows: int) -> int:
    """NDJSON gzip is compressed on one thread per sink, so a part is cut into gzip members of MEMBER_ROWS rows
    that encode in parallel (concatenated gzip members are one valid gzip file, RFC 1952 section 2.2); a
    Parquet part is one member (its row groups need one footer)."""
    return min(max_rows, MEMBER_ROWS) if file_format is FileFormat.JSON else max_rows


def plan_parts(
    pieces: Sequence[pl.LazyFrame], predicate: pl.Expr | None, max_rows: int, member_rows: int | None = None
) -> list[PartPlan]:
    """Cut the pieces' rows (in order, after the predicate) into parts of exactly `max_rows` rows, the last one
    smaller, and each part into members of at most `member_rows`. Without a predicate the counts come from
    Parquet metadata; with one, only the predicate's columns are read (one batch at a time) to find where each
    part's rows start and end."""
    member_rows = min(member_rows or max_rows, max_rows)
    parts: list[PartPlan] = []
    members: list[tuple[RowRange, ...]] = []
    current: list[RowRange] = []
    part_room, member_room = max_rows, member_rows
    for index, piece in enumerate(pieces):
        if predicate is None:
            positions = None
            count = int(piece.select(pl.len()).collect().item())
        else:
            positions = piece.select(predicate.fill_null(False).alias("keep")).collect().to_series().arg_true()
            count = positions.len()
        taken = 0
        while taken < count:
            take = min(part_room, member_room, count - taken)
            if positions is None:
                start, end = taken, taken + take
            else:
                start, end = int(positions[taken]), int(positions[taken + take - 1]) + 1
            current.append(RowRange(index, start, end - start, take))
            taken += take
            part_room -= take
            member_room -= take
            if member_room == 0 or part_room == 0:
                members.append(tuple(current))
                current, member_room = [], member_rows
            if part_room == 0:
                parts.append(PartPlan(tuple(members)))
                members, part_room = [], max_rows
    if current:
        members.append(tuple(current))
    if members:
        parts.append(PartPlan(tuple(members)))
    return parts


def work(plans: Sequence[PartPlan]) -> Iterator[Member]:
    for number, plan in enumerate(plans):
        for index, ranges in enumerate(plan.members):
            yield Member(number, index, index == len(plan.members) - 1, ranges)


class FrameRows:
    """A plain lazy frame as the writer's input (tests, ad-hoc exports): one piece, read by polars' engine."""

    def __init__(self, frame: pl.LazyFrame):
        self.frame = frame
        self.predicate = None
        self.schema = frame.collect_schema()

    def pieces(self) -> list[pl.LazyFrame]:
        return [self.frame]

    def read(self, piece: int, start: int, length: int) -> Iterator[pl.DataFrame]:
        yield from self.frame.slice(start, length).collect_batches(chunk_size=CHUNK_ROWS)


def member_chunks(rows: Selection | FrameRows, member: Member) -> Iterator[pl.DataFrame]:
    """The member's rows in order, in bounded chunks (the predicate applied)."""
    for item in member.ranges:
        for chunk in rows.read(item.piece, item.start, item.length):
            chunk = chunk if rows.predicate is None else chunk.filter(rows.predicate)
            if chunk.height:
                yield chunk


def export_frame(
    storage: Storage,
    rows: Selection | pl.LazyFrame,
    spec: ExportSpec,
    scratch: Path | None = None,
    progress: Callable[[ExportProgress], None] | None = None,
) -> ExportResult:
    """Write the window's rows to `storage` under `spec.folder` as bounded part files plus a manifest."""
    started = time.perf_counter()
    result = ExportResult(folder=spec.folder)
    source = rows if isinstance(rows, Selection) else FrameRows(rows)
    max_rows = max(1, spec.max_rows_per_file)
    plans = plan_parts(source.pieces(), source.predicate, max_rows, member_rows(spec.file_format, max_rows))
    planned_rows = sum(p.rows for p in plans)
    old_manifests, previous = _previous_export(storage, spec)
    ext = extension(spec.file_format, spec.compression)
    job = uuid.uuid4()
    if scratch is not None:
        scratch.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix="ajo-export-", dir=scratch))
    try:
        begin_attempt(storage, Attempt(str(job), spec.run_id, spec.dataset_id, spec.folder, previous),
                      workdir / ".attempt")
        for key in old_manifests:
            storage.delete(key)
    except BaseException:
        leave_attempt(str(job))
        shutil.rmtree(workdir, ignore_errors=True)
        raise
    encryptor = Encryptor(spec.pgp_public_key) if spec.pgp_public_key else None
    encoders = spec.encoders or default_encoders(spec.file_format)

    def encode(member: Member) -> list[tuple[Path, int]]:
        return encode_part(
            lambda: member_chunks(source, member),
            source.schema,
            member.rows,
            workdir / f"encode-{member.part:05d}-{member.index:05d}",
            spec.file_format,
            spec.compression,
            spec.max_bytes_per_file,
        )

    def publish(path: Path, rows: int) -> None:
        name = f"part-{len(result.files):05d}-{job}-c000.{ext}"
        _publish(storage, path, name, rows, spec, result, encryptor)
        if progress is not None:
            elapsed = time.perf_counter() - started
            progress(ExportProgress(result.rows, result.bytes, len(result.files), planned_rows, elapsed))

    pool = ThreadPoolExecutor(max_workers=encoders, thread_name_prefix="ajo-encode")
    in_flight: deque[tuple[Member, Future[list[tuple[Path, int]]]]] = deque()
    joined = _Joined(workdir / "joined")  # members concatenated into the part file being assembled
    try:
        upcoming = work(plans)
        for member in upcoming:
            in_flight.append((member, pool.submit(encode, member)))
            if len(in_flight) > encoders:
                break
        while in_flight:
            member, future = in_flight.popleft()
            encoded = future.result()
            following = next(upcoming, None)
            if following is not None:  # keep the encoders busy while this member is published
                in_flight.append((following, pool.submit(encode, following)))
            if len(plans[member.part].members) == 1:
                for path, rows in encoded:
                    publish(path, rows)
                continue
            for path, rows in encoded:
                if joined.rows and joined.size + path.stat().st_size > spec.max_bytes_per_file:
                    publish(*joined.take())
                joined.append(path, rows)
            if member.last:
                publish(*joined.take())
        keep = set(result.keys)
        for key in previous:
            if key not in keep:
                storage.delete(key)
                result.removed.append(key)
        if spec.write_manifest:
            manifest = Manifest(
                flowRunId=spec.run_id,
                scheduledTime=scheduled_time(spec.export_time),
                exportResults=result.files,
                datasetId=spec.dataset_id,
                dataflow=spec.dataflow,
                destinationId=spec.destination_id,
                totalRows=result.rows,
                format=spec.file_format.value,
                compression=spec.compression.value,
                schema=schema_json(source.schema),
                batchIds=[batch.batch_id for batch in source.batches] if isinstance(source, Selection) else [],
            )
            key = join_key(spec.folder, manifest_name(spec.destination_id, spec.run_id))
            storage.put_bytes(key, manifest.to_json(), workdir / ".manifest")
            result.manifest_key = key
        end_attempt(storage, str(job))
    except BaseException:
        for _, future in in_flight:
            future.cancel()
        pool.shutdown(wait=True, cancel_futures=True)
        if _withdraw(storage, [*result.keys, *previous]):  # the old manifest is gone: its files are strays now
            end_attempt(storage, str(job))
        raise
    finally:
        leave_attempt(str(job))
        pool.shutdown(wait=True, cancel_futures=True)
        if encryptor is not None:
            encryptor.close()
        shutil.rmtree(workdir, ignore_errors=True)
    result.seconds = time.perf_counter() - started
    return result


class _Joined:
    """A part file assembled from encoded members, appended in order (plain byte concatenation)."""

    def __init__(self, stem: Path):
        self.stem, self.count, self.rows, self.size = stem, 0, 0, 0
        self.path: Path | None = None

    def append(self, member: Path, rows: int) -> None:
        if self.path is None:
            self.path = self.stem.with_name(f"{self.stem.name}-{self.count}")
            self.count += 1
        with self.path.open("ab") as sink, member.open("rb") as source:
            shutil.copyfileobj(source, sink, 1 << 20)
        member.unlink()
        self.rows += rows
        self.size = self.path.stat().st_size

    def take(self) -> tuple[Path, int]:
        assert self.path is not None, "a part has at least one member"
        taken = (self.path, self.rows)
        self.path, self.rows, self.size = None, 0, 0
        return taken


def _previous_export(storage: Storage, spec: ExportSpec) -> tuple[list[str], list[str]]:
    """The manifests and part files of an earlier export of this dataset's window.

    In a dedicated folder that is every part file there (even strays of an attempt that died mid-upload);
    in a folder shared with other datasets only what this dataset's manifests list."""
    prefix = spec.folder + "/" if spec.folder else ""
    here = [obj.key for obj in storage.list(prefix) if "/" not in obj.key[len(prefix) :]]
    manifests = [key for key in here if is_manifest(key)]
    if spec.dedicated_folder:
        leftovers = [key for key in here if key[len(prefix) :].startswith("part-") or key.endswith(".part")]
        return manifests, leftovers  # `.part`: a temporary name of an upload that died mid-transfer
    mine, parts = [], []
    for key in manifests:
        manifest = Manifest.from_json(storage.read_bytes(key))
        if manifest.datasetId == spec.dataset_id:
            mine.append(key)
            parts.extend(join_key(spec.folder, item.name) for item in manifest.exportResults)
    return mine, parts


def _publish(
    storage: Storage,
    path: Path,
    name: str,
    rows: int,
    spec: ExportSpec,
    result: ExportResult,
    encryptor: Encryptor | None,
) -> None:
    if encryptor is not None:
        encrypted = path.with_name(path.name + ENCRYPTED_SUFFIX)
        encryptor.encrypt(path, encrypted)
        path.unlink()
        path, name = encrypted, name + ENCRYPTED_SUFFIX
    key = join_key(spec.folder, name)
    sha256 = file_sha256(path)
    stored = storage.publish(path, key)
    result.keys.append(key)
    result.files.append(
        ExportedFile(
            sinkPath=storage.sink_path(spec.folder),
            name=name,
            size=stored.size,
            rows=rows,
            sha256=sha256,
            nativeChecksum=stored.native_checksum,
        )
    )
    result.rows += rows
    result.bytes += stored.size
    path.unlink()


def _withdraw(storage: Storage, keys: list[str]) -> bool:
    """Best effort: remove what a failed attempt published, so the rerun starts from a clean window. False when
    something stayed: the attempt's marker then stays too, for the next export's sweep (`attempts.py`)."""
    for key in keys:
        try:
            storage.delete(key)
        except Exception as exc:  # noqa: BLE001 - the original failure is the one to report
            log.warning("could not remove %s after a failed export (%s): the next export's sweep will",
                        key, type(exc).__name__)
            return False  # the connection is most likely gone: each further delete would only wait and fail
    return True
