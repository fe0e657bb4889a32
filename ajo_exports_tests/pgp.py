"""A throwaway GnuPG key pair for tests that encrypt exports and decrypt them back."""

from __future__ import annotations

import base64
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

UID = "ajo test <ajo@example.invalid>"


@dataclass(frozen=True)
class KeyPair:
    home: Path
    fingerprint: str
    public_b64: str
    private_b64: str


def _gpg(home: Path, *args: str) -> bytes:
    """Run gpg on a test home, failing the test with gpg's stderr."""
    env = {**os.environ, "GNUPGHOME": str(home), "LC_ALL": "C"}
    done = subprocess.run(
        ["gpg", "--homedir", str(home), "--batch", "--no-tty", "--quiet", *args],
        capture_output=True,
        env=env,
        stdin=subprocess.DEVNULL,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr.decode(errors="replace")
    return done.stdout


def _gen_key(home: Path, uid: str, usage: str, expire: str, *extra: str) -> str:
    """Generate an unprotected RSA key in home and return its fingerprint."""
    _gpg(home, *extra, "--passphrase", "", "--quick-gen-key", uid, "rsa2048", usage, expire)
    listing = _gpg(home, "--with-colons", "--fingerprint", uid).decode()
    return next(line.split(":")[9] for line in listing.splitlines() if line.startswith("fpr:"))


def _b64(armoured: bytes) -> str:
    return base64.b64encode(armoured).decode("ascii")


def _agents(home: Path) -> str:
    """Processes whose command line names the home, e.g. a gpg-agent or dirmngr started for it."""
    done = subprocess.run(["pgrep", "-af", str(home)], capture_output=True, text=True, check=False)
    return done.stdout.strip()


@pytest.fixture(scope="module")
def gpg_home() -> Iterator[Path]:
    """A throwaway GnuPG home; its agent is killed and the directory removed afterwards."""
    home = Path(tempfile.mkdtemp(prefix="ajo-test-gpg-"))
    yield home
    subprocess.run(["gpgconf", "--homedir", str(home), "--kill", "all"], capture_output=True, check=False)
    shutil.rmtree(home, ignore_errors=True)


@pytest.fixture(scope="module")
def key_pair(gpg_home: Path) -> KeyPair:
    fingerprint = _gen_key(gpg_home, UID, "encrypt,sign", "never")
    return KeyPair(
        home=gpg_home,
        fingerprint=fingerprint,
        public_b64=_b64(_gpg(gpg_home, "--armor", "--export", fingerprint)),
        private_b64=_b64(
            _gpg(
                gpg_home,
                "--pinentry-mode",
                "loopback",
                "--passphrase",
                "",
                "--armor",
                "--export-secret-keys",
                fingerprint,
            )
        ),
    )


def decrypt(key_pair: KeyPair, src: Path, dst: Path) -> None:
    """Decrypt an exported .gpg file with the test's private key."""
    _gpg(key_pair.home, "--yes", "--output", str(dst), "--decrypt", str(src))
