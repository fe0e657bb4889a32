"""SFTP: a folder on an SSH server, published by upload-to-`.part` then POSIX rename.

AEP's SFTP destination takes a host, port, username and a password or a Base64 private key, and has no host-key
field. Here the server's host key is always verified (known_hosts lines or a SHA256 fingerprint) before any
credential is sent, so a password or key never reaches a server that merely answers on the address.

`known_hosts` is either the text of OpenSSH known_hosts lines or the path of such a file: a value without
whitespace is read as a path (`~` expanded). For a port other than 22 the entry is looked up as `[host]:port`,
as OpenSSH writes it (`ssh-keyscan -p PORT host`). `host_key_fingerprint` is what `ssh-keygen -lf` prints,
`SHA256:<base64>` (or `MD5:<hex:pairs>`). When both are given, both must match.

Publishing needs OpenSSH's `posix-rename@openssh.com` extension (every OpenSSH server has it): the final name
appears complete or not at all. A connection lost mid-upload reconnects and rewrites `<name>.part` from the start;
a server that stays away leaves at most that `.part` (a `part-*` name, which the next export of the window
removes). SFTP has no checksum of its own, so `native_checksum` is None.
"""

from __future__ import annotations

import base64
import binascii
import errno
import hmac
import io
import logging
import posixpath
import socket
import stat as statmode
from collections.abc import Callable
from pathlib import Path
from typing import IO, TYPE_CHECKING, Literal, TypeVar

from pydantic import Field, field_validator, model_validator

from ajo_exports.destinations.base import DestinationError, DestinationSettings, Storage, StoredObject, join_key, retry
from ajo_exports.settings import Secret, clean_folder

if TYPE_CHECKING:  # paramiko is imported where it is used: loading definitions never pays for it
    import paramiko

log = logging.getLogger(__name__)
T = TypeVar("T")
TRANSIENT_ERRNOS = {
    errno.ECONNRESET, errno.ECONNREFUSED, errno.ECONNABORTED, errno.EPIPE, errno.ETIMEDOUT,
    errno.EHOSTUNREACH, errno.ENETUNREACH, errno.ENETDOWN,
}
KEY_CLASSES = ("RSAKey", "Ed25519Key", "ECDSAKey")  # paramiko's key classes, tried in this order


def load_private_key(value: str) -> paramiko.PKey:
    """The key AEP takes: Base64 of a PEM/OpenSSH private key without passphrase (plain PEM text is accepted too)."""
    import paramiko

    text = value.strip()
    if "PRIVATE KEY" not in text:
        try:
            text = base64.b64decode("".join(text.split()), validate=True).decode("ascii")
        except (binascii.Error, UnicodeDecodeError, ValueError):
            raise ValueError("private_key is not Base64 of a PEM/OpenSSH private key") from None
    for key_class in (getattr(paramiko, name) for name in KEY_CLASSES):
        try:
            return key_class.from_private_key(io.StringIO(text))
        except paramiko.PasswordRequiredException:
            raise ValueError("private_key is passphrase-protected (AEP requires a key without passphrase)") from None
        except (paramiko.SSHException, ValueError, TypeError, IndexError):
            continue
    raise ValueError("private_key is not an RSA (or Ed25519/ECDSA) private key in PEM or OpenSSH format")


def parse_known_hosts(text: str) -> tuple[paramiko.HostKeys, list[paramiko.PKey]]:
    """Known host keys and `@revoked` keys from known_hosts lines; `@cert-authority` lines are not supported."""
    import paramiko

    keys = paramiko.HostKeys()
    revoked: list[paramiko.PKey] = []
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#") or line.startswith("@cert-authority"):
            continue
        is_revoked = line.startswith("@revoked")
        if is_revoked:
            line = line[len("@revoked"):].strip()
        try:
            entry = paramiko.hostkeys.HostKeyEntry.from_line(line, number)
        except (paramiko.hostkeys.InvalidHostKey, paramiko.SSHException, ValueError):
            entry = None
        if entry is None or entry.key is None:
            raise ValueError(f"known_hosts line {number} is not '<hosts> <key type> <base64 key>'")
        if is_revoked:
            revoked.append(entry.key)
            continue
        for hostname in entry.hostnames:
            keys.add(hostname, entry.key.get_name(), entry.key)
    return keys, revoked


def fingerprint_matches(key: paramiko.PKey, expected: str) -> bool:
    """Compare with what `ssh-keygen -lf` prints: SHA256:<b64 without padding> or MD5:<hex pairs>."""
    expected = expected.strip()
    if expected.upper().startswith("MD5:"):
        seen, wanted = key.get_fingerprint().hex(":"), expected[4:].lower()
    else:
        seen, wanted = key.fingerprint, "SHA256:" + expected.split(":", 1)[-1].rstrip("=")
    return hmac.compare_digest(seen.encode(), wanted.encode())


class SftpStorage(Storage):
    """One SSH connection (reopened after a drop) to an SFTP server, rooted at `folder`: an absolute folder as
    given, a relative one under the login folder."""

    def __init__(
        self,
        name: str,
        *,
        host: str,
        port: int = 22,
        username: str,
        password: str | None = None,
        private_key: str | None = None,
        folder: str = "",
        known_hosts: str | None = None,
        host_key_fingerprint: str | None = None,
        timeout: float = 30.0,
        attempts: int = 5,
    ):
        self.name = name
        self.host, self.port, self.username = host, port, username
        self.host_id = host if port == 22 else f"[{host}]:{port}"
        self.timeout, self.attempts = timeout, attempts
        self._password = password
        self._secrets = [s for s in (password, private_key) if s]
        if (password is None) == (private_key is None):
            raise DestinationError(name, f"log in as {username}", "give exactly one of password or private_key")
        if known_hosts is None and host_key_fingerprint is None:
            raise DestinationError(name, f"connect to {self.host_id}", "no known_hosts or host_key_fingerprint given")
        try:
            self._pkey = load_private_key(private_key) if private_key is not None else None
        except ValueError as exc:
            raise DestinationError(name, f"log in as {username}", str(exc)) from None
        self._known, self._revoked = self._known_hosts(known_hosts) if known_hosts is not None else (None, [])
        self._fingerprint = host_key_fingerprint
        self._folder = folder
        self._transport: paramiko.Transport | None = None
        self._sftp: paramiko.SFTPClient | None = None
        self._dirs: set[str] = set()
        self._unreachable = False
        self.root = ""
        self._call(f"open folder {folder or '(login folder)'}", self._open_root)

    # -- connection ---------------------------------------------------------------------------------------

    def _known_hosts(self, value: str) -> tuple[paramiko.HostKeys, list[paramiko.PKey]]:
        text = value
        if len(value.split()) == 1:
            path = Path(value.strip()).expanduser()
            try:
                text = path.read_text()
            except OSError as exc:
                reason = exc.strerror or "unreadable"
                raise DestinationError(self.name, f"read known_hosts file {path}", reason) from None
        try:
            return parse_known_hosts(text)
        except ValueError as exc:
            raise DestinationError(self.name, "read known_hosts", str(exc)) from None

    def _connect(self) -> paramiko.SFTPClient:
        import paramiko

        # paramiko's transport thread logs a failed handshake (e.g. a connection reset during the banner) with a
        # traceback, then raises it here, where it is retried or reported in one line: its log would put
        # tracebacks on the CLI's stderr.
        logging.getLogger("paramiko.transport").setLevel(logging.CRITICAL)
        try:
            sock = socket.create_connection((self.host, self.port), timeout=self.timeout)
        except socket.gaierror:
            raise DestinationError(self.name, f"connect to {self.host_id}", "unknown host name") from None
        transport = paramiko.Transport(sock)
        try:
            transport.banner_timeout = transport.auth_timeout = self.timeout
            known = self._known.lookup(self.host_id) if self._known is not None else None
            if known:
                self._prefer_key_types(transport, known.keys())
            transport.start_client(timeout=self.timeout)
            self._check_host_key(transport.get_remote_server_key())
            try:
                if self._pkey is not None:
                    transport.auth_publickey(self.username, self._pkey)
                else:
                    transport.auth_password(self.username, self._password)
            except paramiko.BadAuthenticationType as exc:
                allowed = ", ".join(exc.allowed_types) or "none"
                reason = f"this login method is not allowed (server allows: {allowed})"
                raise DestinationError(self.name, f"log in as {self.username}", reason) from None
            except paramiko.AuthenticationException:
                raise DestinationError(
                    self.name, f"log in as {self.username}", "authentication failed (wrong password or key)"
                ) from None
            sftp = paramiko.SFTPClient.from_transport(transport)
            if sftp is None:
                raise paramiko.SSHException("the server refused the sftp subsystem")
            sftp.get_channel().settimeout(self.timeout)
        except BaseException:
            transport.close()
            raise
        self._transport, self._sftp = transport, sftp
        log.debug("connected to %s", self.uri())
        return sftp

    @staticmethod
    def _prefer_key_types(transport: paramiko.Transport, known_types: list[str]) -> None:
        """Ask for the host key type known_hosts holds, as OpenSSH does (else ed25519 would win negotiation)."""
        options = transport.get_security_options()
        wanted: list[str] = []
        for name in known_types:
            wanted += ["rsa-sha2-512", "rsa-sha2-256", "ssh-rsa"] if name == "ssh-rsa" else [name]
        available = list(options.key_types)
        options.key_types = [t for t in wanted if t in available] + [t for t in available if t not in wanted]

    def _check_host_key(self, key: paramiko.PKey) -> None:
        seen = f"{key.get_name()} {key.fingerprint}"
        action = f"connect to {self.host_id}"
        if any(key == bad for bad in self._revoked):
            raise DestinationError(self.name, action, f"host key {seen} is marked @revoked in known_hosts")
        if self._known is not None:
            known = self._known.lookup(self.host_id)
            expected = known.get(key.get_name()) if known else None
            if expected is None:
                reason = f"unknown host key {seen}: not in known_hosts for {self.host_id}"
                raise DestinationError(self.name, action, reason)
            if expected != key:
                raise DestinationError(
                    self.name, action, f"host key {seen} does not match known_hosts (changed key or man in the middle)"
                )
        if self._fingerprint is not None and not fingerprint_matches(key, self._fingerprint):
            raise DestinationError(
                self.name, action, f"host key {seen} does not match host_key_fingerprint {self._fingerprint.strip()}"
            )

    def _client(self) -> paramiko.SFTPClient:
        if self._sftp is not None and self._transport is not None and self._transport.is_active():
            return self._sftp
        self._disconnect()
        return self._connect()

    def _disconnect(self) -> None:
        for closable in (self._sftp, self._transport):
            if closable is not None:
                try:
                    closable.close()
                except Exception:  # noqa: BLE001 - already broken
                    pass
        self._sftp = self._transport = None

    def _is_transient(self, exc: BaseException) -> bool:
        import paramiko

        if isinstance(exc, DestinationError):
            return exc.transient
        if isinstance(exc, (paramiko.SSHException, EOFError, socket.timeout, ConnectionError)):
            return True
        if isinstance(exc, OSError):
            return exc.errno in TRANSIENT_ERRNOS or self._transport is None or not self._transport.is_active()
        return False

    def _reason(self, exc: BaseException) -> str:
        if isinstance(exc, PermissionError):
            reason = "permission denied"
        elif isinstance(exc, FileNotFoundError):
            reason = "no such file or folder"
        else:
            text = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            reason = f"{type(exc).__name__}: {text}" if text else type(exc).__name__
            if text.startswith("size mismatch in put"):  # paramiko: the server kept fewer bytes than were sent
                stored, sent = (text.split("!", 1)[1].split("!=") + ["?", "?"])[:2]
                reason = f"the server stored {stored.strip()} of {sent.strip()} bytes: disk full or over quota"
            elif text == "Failure":  # SSH_FX_FAILURE, what a full disk or an exceeded quota answers
                reason = "the server failed the operation (SSH_FX_FAILURE): disk full or over quota?"
        for secret in self._secrets:
            reason = reason.replace(secret, "***")
        return reason

    def _call(self, action: str, operation: Callable[[paramiko.SFTPClient], T]) -> T:
        """Run one SFTP operation; transient failures reconnect and retry, the rest become a DestinationError."""

        def attempt() -> T:
            try:
                result = operation(self._client())
            except Exception as exc:
                if self._is_transient(exc):
                    self._disconnect()
                raise
            self._unreachable = False
            return result

        # A server that stayed away through one whole backoff gets one attempt per call until it answers again,
        # so cleaning up after a lost server does not wait out a backoff per file.
        attempts = 1 if self._unreachable else self.attempts
        try:
            return retry(attempt, is_transient=self._is_transient, attempts=attempts, what=f"{self.name}: {action}")
        except DestinationError as exc:
            self._unreachable = exc.transient
            raise
        except Exception as exc:  # noqa: BLE001 - classified and named here
            transient = self._is_transient(exc)
            self._unreachable = transient
            raise DestinationError(self.name, action, self._reason(exc), transient=transient) from None

    # -- paths --------------------------------------------------------------------------------------------

    def _open_root(self, sftp: paramiko.SFTPClient) -> None:
        if not self.root:
            self.root = posixpath.normpath(posixpath.join(sftp.normalize("."), self._folder))
        self._makedirs(sftp, self.root)

    def _remote(self, key: str) -> str:
        path = posixpath.normpath(posixpath.join(self.root, key))
        if not key or key.startswith("/") or not path.startswith(self.root.rstrip("/") + "/"):
            raise DestinationError(self.name, f"access {key!r}", "key escapes the destination folder")
        return path

    def _makedirs(self, sftp: paramiko.SFTPClient, directory: str) -> None:
        """mkdir -p, remembering what exists so each publish costs no extra round trips."""
        missing = []
        current = directory
        while current not in self._dirs and current not in ("/", ""):
            try:
                attrs = sftp.stat(current)
            except FileNotFoundError:
                missing.append(current)
                current = posixpath.dirname(current)
                continue
            if not statmode.S_ISDIR(attrs.st_mode or 0):
                raise NotADirectoryError(errno.ENOTDIR, f"{current} is not a folder")
            break
        for path in reversed(missing):
            try:
                sftp.mkdir(path)
            except OSError as refused:
                try:
                    made = statmode.S_ISDIR(sftp.stat(path).st_mode or 0)  # made meanwhile by another writer?
                except OSError:
                    made = False
                if not made:
                    raise refused from None
            self._dirs.add(path)
        self._dirs.add(directory)

    # -- Storage ------------------------------------------------------------------------------------------

    def publish(self, local_path: Path, key: str) -> StoredObject:
        remote = self._remote(key)
        temporary = remote + ".part"
        size = local_path.stat().st_size

        def put(sftp: paramiko.SFTPClient) -> int:
            self._makedirs(sftp, posixpath.dirname(remote))
            with local_path.open("rb") as stream:
                return sftp.putfo(stream, temporary, file_size=size, confirm=True).st_size

        def upload(sftp: paramiko.SFTPClient) -> int:
            try:
                written = put(sftp)
            except FileNotFoundError:  # a folder this connection made was removed since (an emptied window)
                self._dirs.clear()
                written = put(sftp)
            sftp.posix_rename(temporary, remote)
            return written

        try:
            written = self._call(f"write {remote}", upload)
        except DestinationError:
            self._discard(temporary)
            raise
        return StoredObject(key, written)

    def _discard(self, remote: str) -> None:
        """Best effort after a failed upload; a leftover `.part` is removed by the next export of the window."""
        if self._sftp is None:
            return
        try:
            self._sftp.remove(remote)
        except Exception:  # noqa: BLE001 - the upload failure is the one to report
            pass

    def list(self, prefix: str = "") -> list[StoredObject]:
        def walk(sftp: paramiko.SFTPClient) -> list[StoredObject]:
            found, folders = [], [posixpath.dirname(prefix)]
            while folders:
                relative = folders.pop()
                try:
                    entries = sftp.listdir_attr(posixpath.join(self.root, relative) if relative else self.root)
                except FileNotFoundError:
                    continue
                for entry in entries:
                    key = join_key(relative, entry.filename)
                    mode = entry.st_mode or 0
                    if statmode.S_ISDIR(mode) and ((key + "/").startswith(prefix) or prefix.startswith(key + "/")):
                        folders.append(key)
                    elif statmode.S_ISREG(mode) and key.startswith(prefix):
                        found.append(StoredObject(key, entry.st_size or 0))
            return sorted(found, key=lambda item: item.key)

        return self._call(f"list {posixpath.join(self.root, posixpath.dirname(prefix))}", walk)

    def stat(self, key: str) -> StoredObject | None:
        remote = self._remote(key)

        def lookup(sftp: paramiko.SFTPClient) -> StoredObject | None:
            try:
                attrs = sftp.stat(remote)
            except FileNotFoundError:
                return None
            return StoredObject(key, attrs.st_size or 0) if statmode.S_ISREG(attrs.st_mode or 0) else None

        return self._call(f"stat {remote}", lookup)

    def open_read(self, key: str) -> IO[bytes]:
        remote = self._remote(key)

        def open_file(sftp: paramiko.SFTPClient) -> IO[bytes]:
            handle = sftp.open(remote, "rb")
            # Pipelined reads; memory stays bounded because the SSH channel window holds back unread data
            # (paramiko's max_concurrent_requests busy-waits and is several times slower).
            handle.prefetch()
            return handle  # type: ignore[return-value]

        return self._call(f"read {remote}", open_file)

    def delete(self, key: str) -> None:
        remote = self._remote(key)

        def remove(sftp: paramiko.SFTPClient) -> None:
            try:
                sftp.remove(remote)
            except FileNotFoundError:
                pass
            parent = posixpath.dirname(remote)
            while parent != self.root and parent.startswith(self.root + "/"):
                try:
                    sftp.rmdir(parent)
                except OSError:
                    break
                self._dirs.discard(parent)
                parent = posixpath.dirname(parent)

        self._call(f"delete {remote}", remove)

    def uri(self, key: str = "") -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        path = self._remote(key) if key else self.root
        return f"sftp://{self.username}@{host}:{self.port}{path}"

    def sink_path(self, key: str = "") -> str:
        return "/" + join_key(self.root, key)

    def close(self) -> None:
        self._disconnect()


class SftpDestinationConfig(DestinationSettings):
    """An SFTP server (AEP: "SFTP with Password" / "SFTP with SSH Key"), always with a verified host key."""

    aep_connection_spec = "36965a81-b1c6-401b-99f8-22508f1e6a26"
    aep_auth_fields = {"domain": "host", "port": "port", "username": "username", "password": "password",
                       "sshKey": "private_key"}
    kind = "sftp"
    type: Literal["sftp"]
    host: str
    """The SFTP server's host name or address (AEP: domain)."""
    port: int = Field(22, ge=1, le=65535)
    """The SFTP server's port."""
    username: str
    """The login (AEP: username)."""
    password: Secret | None = None
    """The password, as `${VAR}`; or give private_key."""
    private_key: Secret | None = None
    """A Base64 private key (RSA, as AEP), as `${VAR}` (AEP: sshKey)."""
    known_hosts: str | None = None
    """known_hosts lines for the server: its host key is always verified."""
    host_key_fingerprint: str | None = None
    """The host key's SHA256:... fingerprint, instead of known_hosts."""

    @model_validator(mode="after")
    def _auth(self) -> SftpDestinationConfig:
        if (self.password is None) == (self.private_key is None):
            raise ValueError("give exactly one of password or private_key")
        if self.known_hosts is None and self.host_key_fingerprint is None:
            raise ValueError("give known_hosts or host_key_fingerprint: unknown host keys are refused")
        return self

    @field_validator("folder")
    @classmethod
    def _folder(cls, value: str) -> str:
        """A path on the server: an absolute folder is used as given, a relative one is under the login folder."""
        return ("/" if value.startswith("/") else "") + clean_folder(value)

    @property
    def location(self) -> str:
        """`/~/` names the login folder, as curl's sftp:// URLs do; the real path is known once connected."""
        path = self.folder if self.folder.startswith("/") else "/~/" + self.folder
        return f"sftp://{self.username}@{self.host}:{self.port}{path}"

    def open_storage(self) -> Storage:
        return SftpStorage(
            self.name,
            host=self.host,
            port=self.port,
            username=self.username,
            password=self.password,
            private_key=self.private_key,
            folder=self.folder,
            known_hosts=self.known_hosts,
            host_key_fingerprint=self.host_key_fingerprint,
        )
