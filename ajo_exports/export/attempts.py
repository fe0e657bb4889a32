"""Attempt markers: the files of a failed export are found and removed by the next export to that destination.

Before it changes anything, an export writes `_ajo/attempts/<job>.json` at the destination: its run, process,
window folder and the previous export's files it is about to replace. It removes the marker once its manifest is
published, or once a failed attempt has withdrawn everything. A marker that outlives its attempt therefore names
files that no manifest will ever list: the attempt lost its connection (it could not withdraw) or its process was
killed. The rerun of a `once` dataflow lands in a new exportTime folder, so its own clean-up of the window never
reaches them; `sweep_failed_attempts` does, before every export to the destination.

`_ajo` starts with an underscore, so Spark, Hive and polars' dataset readers skip it like `_SUCCESS`.
"""

from __future__ import annotations

import json
import logging
import os
import socket
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from ajo_exports.destinations.base import DestinationError, Storage, join_key
from ajo_exports.export.manifest import Manifest, is_manifest

log = logging.getLogger(__name__)
ATTEMPTS = "_ajo/attempts"
STALE_AFTER = timedelta(hours=24)  # an attempt of an unknown run on another machine is dead after this long


@dataclass(frozen=True)
class Attempt:
    """One export attempt as its marker records it."""

    job: str  # the uuid in every file name the attempt writes
    run_id: str
    dataset_id: str
    folder: str
    replaces: list[str] = field(default_factory=list)  # the previous export's files it removes or overwrites
    host: str = field(default_factory=socket.gethostname)
    pid: int = field(default_factory=os.getpid)
    started: str = field(default_factory=lambda: datetime.now(UTC).isoformat())

    @property
    def key(self) -> str:
        return attempt_key(self.job)

    def owns(self, key: str) -> bool:
        """Whether `key` (directly in the window folder) is one this attempt wrote or was replacing."""
        name = key.rsplit("/", 1)[-1]
        return self.job in name or key in self.replaces


def attempt_key(job: str) -> str:
    return join_key(ATTEMPTS, f"{job}.json")


_LIVE: set[str] = set()  # jobs exporting in this process right now: exact liveness for attempts of this process


def begin_attempt(storage: Storage, attempt: Attempt, scratch: Path) -> None:
    _LIVE.add(attempt.job)
    storage.put_bytes(attempt.key, json.dumps(asdict(attempt)).encode(), scratch)


def leave_attempt(job: str) -> None:
    """The attempt's code has returned or raised in this process, whatever it managed to clean up."""
    _LIVE.discard(job)


def end_attempt(storage: Storage, job: str) -> None:
    """Best effort: a marker left behind only costs the next export a look at a complete window."""
    try:
        storage.delete(attempt_key(job))
    except Exception as exc:  # noqa: BLE001 - the export itself succeeded or already failed for its own reason
        log.warning("could not remove the attempt marker %s: %s", attempt_key(job), type(exc).__name__)


RunFinished = Callable[[str], "bool | None"]  # True: ended; False: still running; None: unknown to this instance


def is_dead(attempt: Attempt, run_finished: RunFinished, now: datetime | None = None) -> bool:
    """An attempt is over when its run has ended, when its process on this machine is gone (SIGKILL leaves the
    run 'started' for ever) or, in this very process, has left it, or, for a run this instance does not know,
    when it is older than STALE_AFTER."""
    finished = run_finished(attempt.run_id)
    if finished:
        return True
    if attempt.host == socket.gethostname():
        if attempt.pid == os.getpid():
            return attempt.job not in _LIVE
        if not _alive(attempt.pid):
            return True
    if finished is None:
        started = datetime.fromisoformat(attempt.started)
        return (now or datetime.now(UTC)) - started > STALE_AFTER
    return False


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, under another user
        return True
    return True


def read_attempts(storage: Storage) -> list[Attempt]:
    found = []
    for obj in storage.list(ATTEMPTS + "/"):
        try:
            found.append(Attempt(**json.loads(storage.read_bytes(obj.key))))
        except DestinationError:
            continue  # its export completed between the listing and the read (exports run concurrently)
        except (ValueError, TypeError) as exc:
            log.warning("ignoring unreadable attempt marker %s: %s", obj.key, exc)
    return found


def sweep_failed_attempts(storage: Storage, run_finished: RunFinished) -> list[str]:
    """Remove what dead attempts left (their files and the replaced files no manifest lists any more), then
    their markers. A file that a manifest in its folder lists is kept: that export completed."""
    removed: list[str] = []
    for attempt in read_attempts(storage):
        if not is_dead(attempt, run_finished):
            continue
        prefix = attempt.folder + "/" if attempt.folder else ""
        here = [obj.key for obj in storage.list(prefix) if "/" not in obj.key[len(prefix) :]]
        listed, before = set(), len(removed)
        try:
            for key in here:
                if is_manifest(key):
                    manifest = Manifest.from_json(storage.read_bytes(key))
                    listed.update(join_key(attempt.folder, item.name) for item in manifest.exportResults)
        except DestinationError:
            continue  # a manifest replaced meanwhile: the next export looks again
        for key in here:
            if not is_manifest(key) and key not in listed and attempt.owns(key):
                storage.delete(key)
                removed.append(key)
        storage.delete(attempt.key)
        log.info("removed %d files of failed attempt %s (run %s) in %s", len(removed) - before, attempt.job,
                 attempt.run_id, attempt.folder)
    return removed
