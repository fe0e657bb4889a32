"""Read an export back from its destination and say whether what the manifest promises is there."""

from __future__ import annotations

from dataclasses import dataclass, field

from ajo_exports.destinations.base import DestinationError, Storage, join_key
from ajo_exports.export.manifest import ExportedFile, Manifest, is_manifest


@dataclass
class Verification:
    files_checked: int = 0
    rows: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.problems

    def summary(self) -> str:
        if self.passed:
            return f"{self.files_checked} files, {self.rows} rows delivered as listed"
        return "; ".join(self.problems)


def verify_manifest(storage: Storage, manifest_key: str, expected_rows: int | None) -> Verification:
    """Verify an export against the manifest it left at the destination."""
    try:
        manifest = Manifest.from_json(storage.read_bytes(manifest_key))
    except DestinationError:
        return Verification(problems=[f"manifest {storage.uri(manifest_key)} is missing"])
    folder = manifest_key.rsplit("/", 1)[0] if "/" in manifest_key else ""
    check = verify_files(storage, folder, manifest.exportResults, expected_rows, manifest.datasetId, manifest_key)
    if sum(item.rows for item in manifest.exportResults) != manifest.totalRows:
        check.problems.append(f"manifest files hold {check.rows} rows but totalRows is {manifest.totalRows}")
    return check


def verify_files(
    storage: Storage,
    folder: str,
    files: list[ExportedFile],
    expected_rows: int | None,
    dataset_id: str,
    manifest_key: str | None = None,
) -> Verification:
    """Every listed file exists with its size and sha256, their rows equal the rows the export read, and, in a
    folder of this dataset's own, nothing else is there (no second set of part files, no second manifest)."""
    check = Verification()
    listed = {join_key(folder, item.name) for item in files}
    for item in files:
        key = join_key(folder, item.name)
        found = storage.stat(key)
        if found is None:
            check.problems.append(f"{item.name}: listed but missing at {storage.uri(key)}")
        elif found.size != item.size:
            check.problems.append(f"{item.name}: size expected {item.size}, found {found.size}")
        elif (sha256 := storage.sha256(key)) != item.sha256:
            check.problems.append(f"{item.name}: sha256 expected {item.sha256}, found {sha256}")
        else:
            check.files_checked += 1
            check.rows += item.rows
    listed_rows = sum(item.rows for item in files)
    if expected_rows is not None and listed_rows != expected_rows:
        check.problems.append(f"the files hold {listed_rows} rows, but the export read {expected_rows} rows")
    if dataset_id in folder.split("/"):
        prefix = folder + "/" if folder else ""
        for obj in storage.list(prefix):
            name = obj.key[len(prefix) :]
            if "/" in name or obj.key in listed or obj.key == manifest_key:
                continue
            if name.startswith("part-"):
                check.problems.append(f"{name}: in the export folder but not listed (a duplicate set?)")
            elif is_manifest(obj.key):
                check.problems.append(f"{name}: a second manifest in the export folder")
    return check
