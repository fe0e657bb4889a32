"""Read an export back from its destination and say whether what the manifest promises is there."""

from __future__ import annotations

from dataclasses import dataclass, field

from ajo_exports.destinations.base import DestinationError, Storage, join_key
from ajo_exports.export.manifest import Manifest, is_manifest


@dataclass
class Verification:
    manifest_key: str
    files_checked: int = 0
    rows: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.problems

    def summary(self) -> str:
        if self.passed:
            return f"{self.files_checked} files, {self.rows} rows delivered as the manifest lists"
        return "; ".join(self.problems)


def verify_delivery(storage: Storage, manifest_key: str, expected_rows: int | None) -> Verification:
    """Every listed file exists with the listed size and sha256, nothing else sits in the window's folder, and
    the manifest's rows equal the rows the export read."""
    check = Verification(manifest_key)
    try:
        manifest = Manifest.from_json(storage.read_bytes(manifest_key))
    except DestinationError:
        check.problems.append(f"manifest {storage.uri(manifest_key)} is missing")
        return check
    folder = manifest_key.rsplit("/", 1)[0] if "/" in manifest_key else ""
    listed = {join_key(folder, item.name) for item in manifest.exportResults}
    for item in manifest.exportResults:
        key = join_key(folder, item.name)
        found = storage.stat(key)
        if found is None:
            check.problems.append(f"{item.name}: listed in the manifest but missing at {storage.uri(key)}")
            continue
        if found.size != item.size:
            check.problems.append(f"{item.name}: size expected {item.size}, found {found.size}")
            continue
        sha256 = storage.sha256(key)
        if sha256 != item.sha256:
            check.problems.append(f"{item.name}: sha256 expected {item.sha256}, found {sha256}")
            continue
        check.files_checked += 1
        check.rows += item.rows
    listed_rows = sum(item.rows for item in manifest.exportResults)
    if listed_rows != manifest.totalRows:
        check.problems.append(f"manifest files hold {listed_rows} rows but totalRows is {manifest.totalRows}")
    if expected_rows is not None and manifest.totalRows != expected_rows:
        check.problems.append(f"manifest totalRows {manifest.totalRows}, but the export read {expected_rows} rows")
    prefix = folder + "/" if folder else ""
    for obj in storage.list(prefix):
        rest = obj.key[len(prefix):]
        if "/" not in rest and rest.startswith("part-") and obj.key not in listed and manifest_is_dedicated(folder, manifest):
            check.problems.append(f"{rest}: in the export folder but not in the manifest (a duplicate set?)")
        elif "/" not in rest and is_manifest(obj.key) and obj.key != manifest_key and manifest_is_dedicated(folder, manifest):
            check.problems.append(f"{rest}: a second manifest in the export folder")
    return check


def manifest_is_dedicated(folder: str, manifest: Manifest) -> bool:
    """Strays are only judged in a folder that belongs to one dataset's window."""
    return manifest.datasetId in folder.split("/")
