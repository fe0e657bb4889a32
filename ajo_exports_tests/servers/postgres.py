"""A real PostgreSQL server on 127.0.0.1 for the scale test (Dagster's run, event-log and schedule storage).

Debian's `postgresql` package puts its programs in /usr/lib/postgresql/<version>/bin; the fixture runs `initdb`
into a fresh folder and `postgres` on a free port, no system service. PostgreSQL refuses to run as root, so when
the tests run as root (CI) both run as an unprivileged user (`nobody`, or `AJO_TEST_PG_USER`) that owns the folder.
The superuser's password is random, registered as a secret, and reaches Dagster only through an environment
variable. Under CI a missing program fails the test; elsewhere it skips.
"""

from __future__ import annotations

import os
import pwd
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from ajo_exports_tests.leaks import register_secret
from ajo_exports_tests.servers import free_port

START_TIMEOUT = 60.0


def missing(what: str) -> None:
    """A missing tool is a failure in CI (a skip there would hide it) and a skip on a developer's machine."""
    if os.environ.get("CI"):
        pytest.fail(what, pytrace=False)
    pytest.skip(what)


def postgres_bin() -> Path | None:
    """The folder of `initdb` and `postgres`: Debian's newest /usr/lib/postgresql/<v>/bin, else the PATH's."""
    versions = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/initdb"),
        key=lambda p: int(p.parent.parent.name) if p.parent.parent.name.isdigit() else 0,
    )
    if versions:
        return versions[-1].parent
    found = shutil.which("initdb")
    return Path(found).resolve().parent if found else None


@dataclass
class PostgresServer:
    """One `postgres` process over its own data folder: the connection settings and a psycopg2 connection."""

    bin_dir: Path
    user: str = "ajo"
    database: str = "dagster"
    port: int = field(default_factory=free_port)
    password: str = field(default_factory=lambda: secrets.token_urlsafe(24), repr=False)
    base: Path | None = None
    process: subprocess.Popen | None = None

    @property
    def data_dir(self) -> Path:
        assert self.base is not None
        return self.base / "data"

    @property
    def log_path(self) -> Path:
        assert self.base is not None
        return self.base / "postgres.log"

    def env(self, prefix: str = "AJO_PG_") -> dict[str, str]:
        """The settings as the environment variables deploy/dagster.yaml reads (the password among them)."""
        return {
            f"{prefix}HOST": "127.0.0.1", f"{prefix}PORT": str(self.port), f"{prefix}USER": self.user,
            f"{prefix}PASSWORD": self.password, f"{prefix}DB": self.database,
        }

    def connect(self, database: str | None = None) -> Any:
        import psycopg2

        return psycopg2.connect(
            host="127.0.0.1", port=self.port, user=self.user, password=self.password,
            dbname=database or self.database, connect_timeout=10,
        )

    def log_tail(self, chars: int = 3000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return "(no log)"

    def _owner(self) -> dict[str, Any]:
        """Popen arguments that drop root to the unprivileged owner of the data folder (postgres refuses root)."""
        if os.geteuid() != 0:
            return {}
        account = pwd.getpwnam(os.environ.get("AJO_TEST_PG_USER", "nobody"))
        return {"user": account.pw_uid, "group": account.pw_gid, "extra_groups": []}

    def start(self) -> PostgresServer:
        register_secret(self.password)
        # Under /tmp rather than pytest's tmp_path: the latter is mode 700 and root's, so `nobody` could not enter.
        self.base = Path(tempfile.mkdtemp(prefix="ajo-pg-"))
        owner = self._owner()
        password_file = self.base / "password"
        password_file.write_text(self.password + "\n")
        password_file.chmod(0o600)
        if owner:
            for path in (self.base, password_file):
                os.chown(path, owner["user"], owner["group"])
        env = {"PATH": os.environ.get("PATH", ""), "LC_ALL": "C.UTF-8", "TZ": "UTC"}
        init = subprocess.run(
            [str(self.bin_dir / "initdb"), "-D", str(self.data_dir), "-U", self.user, "--pwfile", str(password_file),
             "--auth-host=scram-sha-256", "--auth-local=scram-sha-256", "-E", "UTF8", "--no-instructions"],
            capture_output=True, text=True, env=env, cwd=self.base, timeout=180, **owner,
        )
        password_file.unlink()
        if init.returncode != 0:
            pytest.fail(f"initdb failed ({init.returncode}):\n{init.stdout[-2000:]}\n{init.stderr[-2000:]}")
        with self.log_path.open("ab") as log:
            if owner:
                os.chown(self.log_path, owner["user"], owner["group"])
            # Throwaway data: no fsync; sockets only on 127.0.0.1 and in the private folder.
            self.process = subprocess.Popen(
                [str(self.bin_dir / "postgres"), "-D", str(self.data_dir), "-h", "127.0.0.1", "-p", str(self.port),
                 "-k", str(self.base), "-c", "fsync=off", "-c", "synchronous_commit=off",
                 "-c", "full_page_writes=off", "-c", "max_connections=200"],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env, cwd=self.base,
                start_new_session=True, **owner,
            )
        self._wait_ready()
        connection = self.connect("postgres")
        connection.autocommit = True
        with connection.cursor() as cursor:
            cursor.execute(f'CREATE DATABASE "{self.database}"')
        connection.close()
        return self

    def _wait_ready(self) -> None:
        import psycopg2

        deadline = time.monotonic() + START_TIMEOUT
        while True:
            assert self.process is not None
            if self.process.poll() is not None:
                pytest.fail(f"postgres exited with {self.process.returncode}:\n{self.log_tail()}")
            try:
                self.connect("postgres").close()
                return
            except psycopg2.OperationalError as exc:
                if time.monotonic() > deadline:
                    self.stop()
                    pytest.fail(f"postgres not ready within {START_TIMEOUT:.0f}s: {exc}\n{self.log_tail()}")
                time.sleep(0.2)

    def stop(self) -> None:
        """Fast shutdown (SIGINT), SIGKILL after 20 s, then remove the folder."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(10)
        self.process = None
        if self.base is not None:
            shutil.rmtree(self.base, ignore_errors=True)


@pytest.fixture
def postgres_server() -> Iterator[PostgresServer]:
    """A PostgreSQL server of the test's own, with an empty database `dagster` for a Dagster instance."""
    bin_dir = postgres_bin()
    if bin_dir is None or not (bin_dir / "postgres").exists():
        missing("PostgreSQL is not installed (Debian: apt-get install postgresql; `make test-servers` does)")
    assert bin_dir is not None
    server = PostgresServer(bin_dir).start()
    yield server
    server.stop()
