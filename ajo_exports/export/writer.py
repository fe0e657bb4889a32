"""Deliver one dataset's export window to a destination: data files first, manifest last.

The order is what makes delivery atomic for a consumer who waits for the manifest:
1. remove the window's previous manifest (the folder stops looking complete),
2. stream the rows into bounded part files, publishing each as soon as it is closed,
3. remove the previous export's part files that the new set does not contain,
4. publish the manifest.
A failure before 4 leaves no manifest and removes what this attempt published; a rerun of the same window
replaces the folder exactly.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import polars as pl

from ajo_exports.config import Compression, FileFormat
from ajo_exports.destinations.base import Storage, file_sha256, join_key
from ajo_exports.export.encryption import ENCRYPTED_SUFFIX, Encryptor
from ajo_exports.export.formats import PartWriter, extension, open_part
from ajo_exports.export.manifest import (
    ExportedFile,
    Manifest,
    is_manifest,
    manifest_name,
    scheduled_time,
    schema_json,
)

log = logging.getLogger(__name__)


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
    batch_rows: int = 50_000
    dedicated_folder: bool = True  # the folder holds only this dataset's window (template has both macros)
    pgp_public_key: str | None = None  # Base64 armoured key: every data file is encrypted to it and gains .gpg


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


def _batches(frame: pl.LazyFrame, spec: ExportSpec):
    """Stream record batches, never more than min(batch_rows, max_rows_per_file) rows at a time."""
    size = max(1, min(spec.batch_rows, spec.max_rows_per_file))
    for batch in frame.collect_batches(chunk_size=size):
        if batch.height:
            yield batch


def export_frame(storage: Storage, frame: pl.LazyFrame, spec: ExportSpec, scratch: Path | None = None) -> ExportResult:
    """Write `frame` to `storage` under `spec.folder` as bounded part files plus a manifest."""
    started = time.perf_counter()
    result = ExportResult(folder=spec.folder)
    old_manifests, previous = _previous_export(storage, spec)
    for key in old_manifests:
        storage.delete(key)
    ext = extension(spec.file_format, spec.compression)
    job = uuid.uuid4()
    if scratch is not None:
        scratch.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix="ajo-export-", dir=scratch))
    encryptor = Encryptor(spec.pgp_public_key) if spec.pgp_public_key else None
    try:
        writer = None
        for batch in _batches(frame, spec):
            offset = 0
            while offset < batch.height:
                if writer is None:
                    name = f"part-{len(result.files):05d}-{job}-c000.{ext}"
                    writer = open_part(workdir / name, spec.file_format, spec.compression)
                take = min(batch.height - offset, spec.max_rows_per_file - writer.rows)
                writer.write(batch.slice(offset, take))
                offset += take
                if writer.rows >= spec.max_rows_per_file or writer.bytes_written >= spec.max_bytes_per_file:
                    _publish(storage, writer, spec, result, encryptor)
                    writer = None
        if writer is not None:
            _publish(storage, writer, spec, result, encryptor)
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
                schema=schema_json(frame.collect_schema()),
            )
            key = join_key(spec.folder, manifest_name(spec.destination_id, spec.run_id))
            storage.put_bytes(key, manifest.to_json(), workdir / ".manifest")
            result.manifest_key = key
    except BaseException:
        _withdraw(storage, result.keys)
        raise
    finally:
        if encryptor is not None:
            encryptor.close()
        shutil.rmtree(workdir, ignore_errors=True)
    result.seconds = time.perf_counter() - started
    return result


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
    storage: Storage, writer: PartWriter, spec: ExportSpec, result: ExportResult, encryptor: Encryptor | None
) -> None:
    writer.close()
    path: Path = writer.path
    if encryptor is not None:
        encrypted = path.with_name(path.name + ENCRYPTED_SUFFIX)
        encryptor.encrypt(path, encrypted)
        path.unlink()
        path = encrypted
    key = join_key(spec.folder, path.name)
    sha256 = file_sha256(path)
    stored = storage.publish(path, key)
    result.keys.append(key)
    result.files.append(
        ExportedFile(
            sinkPath=storage.sink_path(spec.folder),
            name=path.name,
            size=stored.size,
            rows=writer.rows,
            sha256=sha256,
            nativeChecksum=stored.native_checksum,
        )
    )
    result.rows += writer.rows
    result.bytes += stored.size
    path.unlink()


def _withdraw(storage: Storage, keys: list[str]) -> None:
    """Best effort: remove what a failed attempt published, so the rerun starts from a clean window."""
    for key in keys:
        try:
            storage.delete(key)
        except Exception as exc:  # noqa: BLE001 - the original failure is the one to report
            log.warning("could not remove %s after a failed export: %s", key, type(exc).__name__)
