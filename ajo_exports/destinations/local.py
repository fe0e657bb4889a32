"""The embedded default: a folder on this machine, published by write-then-rename."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import IO, Literal

from ajo_exports.destinations.base import DestinationError, DestinationSettings, Storage, StoredObject, join_key
from ajo_exports.settings import ajo_home


class LocalStorage(Storage):
    def __init__(self, name: str, root: Path):
        self.name = name
        self.root = root
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise DestinationError(name, f"create folder {root}", exc.strerror or str(exc)) from None
        if not os.access(self.root, os.W_OK):
            raise DestinationError(name, f"write to folder {root}", "permission denied")

    def _path(self, key: str) -> Path:
        path = (self.root / key).resolve()
        if self.root.resolve() not in path.parents and path != self.root.resolve():
            raise DestinationError(self.name, f"access {key!r}", "key escapes the destination folder")
        return path

    def publish(self, local_path: Path, key: str) -> StoredObject:
        target = self._path(key)
        temporary = target.with_name(f".{target.name}.part")
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(local_path, temporary)
            os.replace(temporary, target)
        except OSError as exc:
            temporary.unlink(missing_ok=True)
            raise DestinationError(self.name, f"write {target}", exc.strerror or str(exc)) from None
        return StoredObject(key, target.stat().st_size)

    def list(self, prefix: str = "") -> list[StoredObject]:
        base = self.root / prefix.rsplit("/", 1)[0] if "/" in prefix else self.root  # walk only under the prefix
        found = []
        for path in sorted(base.rglob("*")):
            # hidden files are not the store's objects, except an upload's temporary copy that a killed export
            # left (`.<name>.part`): listed, so that the sweep of failed attempts removes it
            if path.is_file() and (not path.name.startswith(".") or path.name.endswith(".part")):
                key = path.relative_to(self.root).as_posix()
                if key.startswith(prefix):
                    found.append(StoredObject(key, path.stat().st_size))
        return found

    def stat(self, key: str) -> StoredObject | None:
        path = self._path(key)
        return StoredObject(key, path.stat().st_size) if path.is_file() else None

    def open_read(self, key: str) -> IO[bytes]:
        try:
            return self._path(key).open("rb")
        except FileNotFoundError:
            raise DestinationError(self.name, f"read {key}", "no such file") from None

    def delete(self, key: str) -> None:
        path = self._path(key)
        path.unlink(missing_ok=True)
        for parent in path.parents:
            if parent == self.root.resolve() or not parent.is_dir() or any(parent.iterdir()):
                break
            parent.rmdir()

    def uri(self, key: str = "") -> str:
        return (self.root / key).resolve().as_uri() if key else self.root.resolve().as_uri()

    def sink_path(self, key: str = "") -> str:
        return "/" + join_key(self.root.resolve().as_posix(), key)


class LocalDestinationConfig(DestinationSettings):
    """A local folder: `path` is resolved against the working directory (default: `<AJO_EXPORTS_HOME>/exports`),
    `folder` nests inside it."""

    kind = "file"
    type: Literal["local"]
    path: str | None = None
    """The local folder; default `<AJO_EXPORTS_HOME>/exports`."""

    def root(self) -> Path:
        return (Path(self.path).expanduser() if self.path else ajo_home() / "exports").resolve()

    @property
    def location(self) -> str:
        return (self.root() / self.folder).as_uri()

    def open_storage(self) -> Storage:
        return LocalStorage(self.name, self.root() / self.folder)
