"""OpenSSH's sshd as a real process on 127.0.0.1 for the SFTP destination tests.

Install it with `apt-get install -y openssh-server` (Debian/Ubuntu). Run as root (as CI does), the fixture
creates a throwaway login user with a random password (removed at the end) and lets only that user log in;
the client key is authorized through an `AuthorizedKeysFile` outside the user's home. Run as another user,
sshd can log in only that same user, by key: password logins then cannot be tested and those tests fail.
"""

from __future__ import annotations

import base64
import os
import pwd
import re
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import paramiko
import pytest

from ajo_exports_tests.leaks import register_secret
from ajo_exports_tests.servers import free_port

SSHD = Path("/usr/sbin/sshd")
SSH_KEYGEN = shutil.which("ssh-keygen") or "/usr/bin/ssh-keygen"
INSTALL = "apt-get install -y openssh-server"


def _run(command: list[str], what: str, stdin: str | None = None) -> None:
    done = subprocess.run(command, input=stdin, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        pytest.fail(f"{what} failed ({done.returncode}): {done.stderr.strip()}", pytrace=False)


def _keygen(path: Path, key_type: str, *extra: str) -> None:
    if not Path(SSH_KEYGEN).exists():
        pytest.fail(f"ssh-keygen is missing: run `{INSTALL}` (it brings openssh-client)", pytrace=False)
    _run([SSH_KEYGEN, "-q", "-t", key_type, *extra, "-N", "", "-C", "ajo-sftp-test", "-f", str(path)], "ssh-keygen")


def _sshd_version() -> tuple[int, int]:
    done = subprocess.run([str(SSHD), "-V"], capture_output=True, text=True, check=False)
    match = re.search(r"OpenSSH_(\d+)\.(\d+)", done.stdout + done.stderr)
    return (int(match.group(1)), int(match.group(2))) if match else (0, 0)


@dataclass
class SftpAccount:
    """The login the tests use: a throwaway user (as root) with a password and an authorized RSA key."""

    username: str
    password: str | None
    home: Path
    key_path: Path
    created: bool

    @property
    def private_key(self) -> str:
        """Base64 of the PEM private key, the way AEP's "SFTP with SSH Key" takes it."""
        return base64.b64encode(self.key_path.read_bytes()).decode("ascii")

    @property
    def public_key_line(self) -> str:
        return self.key_path.with_suffix(".pub").read_text().strip()


def _create_account(location: Path) -> SftpAccount:
    location.mkdir(parents=True, exist_ok=True)
    location.chmod(0o755)  # sshd reads the AuthorizedKeysFile as the login user
    key_path = location / "client_rsa"
    _keygen(key_path, "rsa", "-b", "2048", "-m", "PEM")
    register_secret(base64.b64encode(key_path.read_bytes()).decode("ascii"))
    register_secret(key_path.read_text().split("-----")[2].strip().splitlines()[1])
    (location / "authorized_keys").write_text(key_path.with_suffix(".pub").read_text())
    (location / "authorized_keys").chmod(0o644)
    if os.geteuid() != 0:
        user = pwd.getpwuid(os.geteuid())
        return SftpAccount(user.pw_name, None, Path(user.pw_dir), key_path, created=False)
    username = f"ajo_sftp_{secrets.token_hex(4)}"
    password = secrets.token_urlsafe(18)
    register_secret(password)
    _run(["useradd", "--create-home", "--shell", "/bin/sh", username], f"useradd {username}")
    _run(["chpasswd"], f"chpasswd for {username}", stdin=f"{username}:{password}\n")
    return SftpAccount(username, password, Path(pwd.getpwnam(username).pw_dir), key_path, created=True)


def _remove_account(account: SftpAccount) -> None:
    if account.created:
        subprocess.run(["userdel", "--remove", account.username], capture_output=True, check=False)


def _descendants(pid: int) -> list[int]:
    """Every process below `pid` (sshd puts each connection in its own session, so a process group misses them)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        parent = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(parent, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


@dataclass
class Sshd:
    """One sshd: its address, host keys and the login, with stop/start on the same port and host keys."""

    location: Path
    account: SftpAccount
    port: int = field(default_factory=free_port)
    host: str = "127.0.0.1"
    process: subprocess.Popen | None = None

    def __post_init__(self) -> None:
        self.location.mkdir(parents=True, exist_ok=True)
        for key_type in ("ed25519", "rsa"):
            if not self.host_key_path(key_type).exists():
                _keygen(self.host_key_path(key_type), key_type)

    def host_key_path(self, key_type: str) -> Path:
        return self.location / f"ssh_host_{key_type}_key"

    def host_key(self, key_type: str = "ed25519") -> paramiko.PKey:
        return paramiko.PKey.from_path(self.host_key_path(key_type))

    @property
    def username(self) -> str:
        return self.account.username

    @property
    def password(self) -> str | None:
        return self.account.password

    @property
    def private_key(self) -> str:
        return self.account.private_key

    @property
    def home(self) -> Path:
        """The login folder: SFTP paths (and destination folders) are relative to it."""
        return self.account.home

    @property
    def host_id(self) -> str:
        return f"[{self.host}]:{self.port}"

    def known_hosts(self, *key_types: str) -> str:
        """known_hosts lines for this server, as `ssh-keyscan -p PORT 127.0.0.1` prints them."""
        lines = []
        for key_type in key_types or ("ed25519", "rsa"):
            key = self.host_key(key_type)
            lines.append(f"{self.host_id} {key.get_name()} {key.get_base64()}")
        return "\n".join(lines) + "\n"

    def fingerprint(self, key_type: str = "ed25519") -> str:
        """`ssh-keygen -lf` of a host key: SHA256:<base64>."""
        return self.host_key(key_type).fingerprint

    @property
    def log_path(self) -> Path:
        return self.location / "sshd.log"

    @property
    def config_path(self) -> Path:
        return self.location / "sshd_config"

    def _write_config(self) -> None:
        lines = [
            f"Port {self.port}",
            f"ListenAddress {self.host}",
            f"HostKey {self.host_key_path('ed25519')}",
            f"HostKey {self.host_key_path('rsa')}",
            f"PidFile {self.location / 'sshd.pid'}",
            f"AuthorizedKeysFile {self.account.key_path.parent / 'authorized_keys'}",
            f"AllowUsers {self.username}",
            "StrictModes no",
            "UsePAM no",
            "PasswordAuthentication yes",
            "KbdInteractiveAuthentication no",
            "PubkeyAuthentication yes",
            "Subsystem sftp internal-sftp",
            "LogLevel VERBOSE",
            "MaxStartups 100",
            "PrintMotd no",
            "X11Forwarding no",
        ]
        if _sshd_version() >= (9, 8):
            lines.append("PerSourcePenalties no")  # tests fail logins on purpose; later ones must still connect
        self.config_path.write_text("\n".join(lines) + "\n")

    def start(self, timeout: float = 30.0) -> None:
        if not SSHD.exists():
            pytest.fail(f"{SSHD} is missing: run `{INSTALL}`", pytrace=False)
        for key_type in ("ed25519", "rsa"):
            self.host_key_path(key_type).chmod(0o600)
        self._write_config()
        if os.geteuid() == 0:
            Path("/run/sshd").mkdir(mode=0o755, parents=True, exist_ok=True)  # privilege separation directory
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [str(SSHD), "-D", "-e", "-f", str(self.config_path)],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
        )
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                tail = self.log_path.read_text(errors="replace")[-2000:]
                pytest.fail(f"sshd exited with {self.process.returncode}; log {self.log_path}:\n{tail}", pytrace=False)
            try:
                with socket.create_connection((self.host, self.port), timeout=1) as sock:
                    if sock.recv(64).startswith(b"SSH-"):
                        return
            except OSError:
                pass
            time.sleep(0.05)
        self.stop()
        pytest.fail(f"sshd did not answer on port {self.port} within {timeout}s; log: {self.log_path}", pytrace=False)

    def stop(self) -> None:
        """Stop sshd and every connection it serves, at once (a lost server, not a graceful shutdown)."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGSTOP)  # no new connections while its children are collected
        for pid in _descendants(self.process.pid):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.process.kill()
        self.process.wait(timeout=10)

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    @contextmanager
    def client(self) -> Iterator[paramiko.SFTPClient]:
        """The vendor SDK's own view (key login, verified host key), for setting up and inspecting a test."""
        with paramiko.SSHClient() as ssh:
            ssh.set_missing_host_key_policy(paramiko.RejectPolicy())
            ssh.get_host_keys().add(self.host_id, "ssh-ed25519", self.host_key("ed25519"))
            ssh.connect(
                self.host, self.port, username=self.username, pkey=paramiko.PKey.from_path(self.account.key_path),
                allow_agent=False, look_for_keys=False, timeout=10,
            )
            with ssh.open_sftp() as sftp:
                yield sftp


@pytest.fixture(scope="session")
def sftp_account() -> Iterator[SftpAccount]:
    """The throwaway login user shared by every sshd of the session."""
    location = Path(tempfile.mkdtemp(prefix="ajo-sftp-account-"))
    account = _create_account(location)
    yield account
    _remove_account(account)
    shutil.rmtree(location, ignore_errors=True)


@pytest.fixture(scope="session")
def sftp_server(tmp_path_factory: pytest.TempPathFactory, sftp_account: SftpAccount) -> Iterator[Sshd]:
    """The session's sshd: one server for every SFTP test, each test in its own folder."""
    server = Sshd(tmp_path_factory.mktemp("sshd"), sftp_account)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def sftp_server_private(tmp_path_factory: pytest.TempPathFactory, sftp_account: SftpAccount) -> Iterator[Sshd]:
    """A server of this test's own, for tests that stop it in the middle of an upload and start it again."""
    server = Sshd(tmp_path_factory.mktemp("sshd-private"), sftp_account)
    server.start()
    yield server
    server.stop()


__all__ = ["SftpAccount", "Sshd", "sftp_account", "sftp_server", "sftp_server_private"]
