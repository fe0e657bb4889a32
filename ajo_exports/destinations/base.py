"""The one storage interface that every destination implements, the settings every destination shares.

A destination is one module: its settings model (on `DestinationSettings`: the fields of exports.yaml, their
validation and documentation) and the storage it opens. A storage only moves bytes: publish a finished local file
under a key atomically, list, stat, read and delete. Everything about exports (layout, part files, manifests,
replacing a window) lives once in `ajo_exports.export`, so a new destination is a small module and a registry line
in `ajo_exports.destinations`. Nothing here imports Dagster (`destinations.resource` derives the resources).
"""

from __future__ import annotations

import hashlib
import logging
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, ClassVar, TypeVar

from pydantic import Field, field_validator

from ajo_exports.settings import ConnectorSettings, Name, clean_folder, destination_id

log = logging.getLogger(__name__)
T = TypeVar("T")
CHUNK = 1024 * 1024


@dataclass(frozen=True)
class StoredObject:
    """One object at a destination. `key` is relative to the destination's folder."""

    key: str
    size: int
    native_checksum: str | None = None  # the store's own, e.g. "md5:<hex>", "sha256:<b64>", "crc32c:<b64>"


class DestinationError(Exception):
    """A refusal from a destination, named in the product's words and never carrying a secret."""

    def __init__(self, destination: str, action: str, reason: str, *, transient: bool = False):
        self.destination = destination
        self.transient = transient
        super().__init__(f"destination {destination!r}: {action} refused: {reason}")


class Storage(ABC):
    """A destination's storage, rooted at its folder. Keys use '/' and never start with it."""

    name: str

    @abstractmethod
    def publish(self, local_path: Path, key: str) -> StoredObject:
        """Upload a finished local file so that `key` appears complete or not at all."""

    @abstractmethod
    def list(self, prefix: str = "") -> list[StoredObject]:
        """Every object whose key starts with `prefix`, recursively."""

    @abstractmethod
    def stat(self, key: str) -> StoredObject | None:
        """Size and native checksum of `key`, or None when it does not exist."""

    @abstractmethod
    def open_read(self, key: str) -> IO[bytes]:
        """A readable binary stream of `key` (caller closes it)."""

    @abstractmethod
    def delete(self, key: str) -> None:
        """Remove `key`; removing a missing key is not an error."""

    @abstractmethod
    def uri(self, key: str = "") -> str:
        """A URI a person can paste into the store's own tools, e.g. s3://bucket/folder/key."""

    @abstractmethod
    def sink_path(self, key: str = "") -> str:
        """The path inside the storage location, as AEP's manifest `sinkPath` writes it."""

    def close(self) -> None:  # noqa: B027 - most storages hold nothing to release
        """Release connections; storages are used as context managers."""

    def __enter__(self) -> Storage:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def read_bytes(self, key: str) -> bytes:
        with self.open_read(key) as stream:
            return stream.read()

    def put_bytes(self, key: str, data: bytes, scratch: Path) -> StoredObject:
        """Publish small content (a manifest, a probe) through the same atomic path as data files."""
        scratch.parent.mkdir(parents=True, exist_ok=True)
        scratch.write_bytes(data)
        try:
            return self.publish(scratch, key)
        finally:
            scratch.unlink(missing_ok=True)

    def sha256(self, key: str) -> str:
        """Stream the object back and hash it: the check that the bytes arrived, not just a name."""
        digest = hashlib.sha256()
        with self.open_read(key) as stream:
            for chunk in iter(lambda: stream.read(CHUNK), b""):
                digest.update(chunk)
        return digest.hexdigest()


DEFAULT_MAX_CONCURRENT_EXPORTS = 2


class DestinationSettings(ConnectorSettings):
    """A destination connection in exports.yaml (AEP: a base connection plus its target). Each destination type
    subclasses it with a `type: Literal[...]`, its own fields, a `kind` for the Dagster UI, a `location` for review,
    and `open_storage()`, which runs on the resolved copy (secrets are values there, see `ConnectorSettings`)."""

    kind: ClassVar[str]  # the Dagster asset kind shown in the UI: s3, azure, gcs, sftp, file
    # AEP's counterpart, for `ajo-exports import-aep`: the connection spec ID of this destination type, and each AEP
    # auth parameter's field here (a secret field becomes a ${VAR} reference). None: AEP has no such destination.
    aep_connection_spec: ClassVar[str | None] = None
    aep_auth_fields: ClassVar[dict[str, str]] = {}

    name: Name
    """The destination's name in exports.yaml: lowercase letters, digits, '-' and '_' (at most 63)."""
    folder: str = ""
    """The folder inside the bucket, container or login folder that exports land under (AEP: path)."""
    pgp_public_key: str | None = None
    """A Base64 armoured PGP public key: data files are encrypted to it and gain `.gpg` (manifests stay plain)."""
    # How many exports to this destination run at once within a run. Operational, not reviewed: it changes how fast
    # files arrive, not what or where, so it is left out of the confirmed hash (activation.py) and of review.
    max_concurrent_exports: int = Field(DEFAULT_MAX_CONCURRENT_EXPORTS, ge=1, le=64, exclude=True)
    """How many exports to this destination run at once within a run (operational: not reviewed)."""

    @field_validator("folder")
    @classmethod
    def _folder(cls, value: str) -> str:
        return clean_folder(value)

    @property
    def destination_id(self) -> str:
        return destination_id(self.name)

    @property
    def location(self) -> str:
        """Where files land, in the store's own words (review and messages)."""
        raise NotImplementedError

    def open_storage(self) -> Storage:
        raise NotImplementedError

    def one_credential(self, pair: tuple[str, str], alternative: str) -> str:
        """AEP's two auth specs of a destination: both fields of `pair`, or `alternative` alone."""
        given = [getattr(self, name) is not None for name in pair]
        if all(given) and getattr(self, alternative) is None:
            return "pair"
        if not any(given) and getattr(self, alternative) is not None:
            return alternative
        raise ValueError(f"give either {pair[0]} and {pair[1]}, or {alternative}")


def join_key(*parts: str) -> str:
    return "/".join(p.strip("/") for p in parts if p and p.strip("/"))


def retry(
    action: Callable[[], T],
    *,
    is_transient: Callable[[BaseException], bool],
    attempts: int = 5,
    base_delay: float = 0.2,
    what: str = "",
) -> T:
    """Retry transient failures (5xx, throttling, reset connections) with exponential backoff; terminal ones
    (bad credentials, missing bucket, permission denied) propagate at once."""
    for attempt in range(1, attempts + 1):
        try:
            return action()
        except Exception as exc:  # noqa: BLE001 - classified below
            if attempt == attempts or not is_transient(exc):
                raise
            delay = base_delay * 2 ** (attempt - 1)
            log.warning(
                "transient error on %s (attempt %d/%d), retrying in %.1fs: %s",
                what,
                attempt,
                attempts,
                delay,
                type(exc).__name__,
            )
            time.sleep(delay)
    raise AssertionError("unreachable")


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        for chunk in iter(lambda: stream.read(CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def probe(storage: Storage) -> list[str]:
    """Write, list, read and delete a probe object: what `ajo-exports check-connection` runs. Each step that a
    destination refuses raises its DestinationError, which names the permission it needed."""
    import tempfile
    import uuid

    key = f"_ajo_probe/{uuid.uuid4()}.txt"
    payload = b"ajo-exports connection probe\n"
    with tempfile.TemporaryDirectory(prefix="ajo-probe-") as scratch:
        stored = storage.put_bytes(key, payload, Path(scratch) / "probe.txt")
    steps = [f"write {storage.uri(key)} ({stored.size} bytes)"]
    if key not in {obj.key for obj in storage.list("_ajo_probe/")}:
        raise DestinationError(storage.name, "list", "the probe object was written but is not listed")
    steps.append("list")
    if storage.read_bytes(key) != payload:
        raise DestinationError(storage.name, "read", "the probe object reads back different bytes")
    steps.append("read")
    storage.delete(key)
    if storage.stat(key) is not None:
        raise DestinationError(storage.name, "delete", "the probe object is still there after delete")
    steps.append("delete")
    return steps
