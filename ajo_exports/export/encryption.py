"""PGP encryption of export files with GnuPG, as AEP does for a destination that carries a PGP public key.

The key arrives as Base64 of an ASCII-armoured OpenPGP public key. It is imported into a private, temporary GnuPG
home so the host's keyrings are never read or written, and every data file is encrypted to it by the ``gpg`` binary,
which streams file to file: no file is held in memory and no cryptography is done in Python. Nothing here starts a
gpg-agent or dirmngr, nor touches the network, and messages never carry key material.
"""

from __future__ import annotations

import base64
import binascii
import os
import shutil
import subprocess
import tempfile
import weakref
from pathlib import Path
from types import TracebackType

ENCRYPTED_SUFFIX = ".gpg"

_BAD_KEY = "pgp_public_key is not Base64 of an ASCII-armoured OpenPGP public key"
_PUBLIC_HEADER = "-----BEGIN PGP PUBLIC KEY BLOCK-----"
_PRIVATE_HEADER = "-----BEGIN PGP PRIVATE KEY BLOCK-----"
_IMPORT_TIMEOUT = 60.0
_MAX_MESSAGE = 200

# Options on every call: no prompts, no daemons started, no key lookups on the network, no locale-dependent output.
_COMMON = (
    "--batch",
    "--no-tty",
    "--quiet",
    "--no-greeting",
    "--no-options",
    "--no-autostart",
    "--disable-dirmngr",
    "--no-auto-key-locate",
    "--no-auto-key-retrieve",
    "--no-permission-warning",
)


class EncryptionError(Exception):
    """A PGP key or encryption failure; the message is one line and never contains key material."""


def _tool(name: str) -> str:
    """The path of a GnuPG binary, so a missing install fails with a clear message rather than FileNotFoundError."""
    path = shutil.which(name)
    if path is None:
        raise EncryptionError(f"{name} is not installed: PGP encryption needs GnuPG")
    return path


def _env(home: Path) -> dict[str, str]:
    """The environment for a GnuPG call: the private home and the C locale, so messages are stable English."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GPG_") and k != "GNUPGHOME"}
    env.update(GNUPGHOME=str(home), LC_ALL="C", LANGUAGE="C")
    return env


def _first_line(stderr: bytes) -> str:
    """The first non-empty line of gpg's stderr, bounded, for a one-line error message."""
    for line in stderr.decode("utf-8", errors="replace").splitlines():
        line = line.strip().removeprefix("gpg: ")
        if line:
            return line[:_MAX_MESSAGE]
    return "no message"


def _gpg(home: Path, *args: str, stdin: bytes | None = None, timeout: float | None = None) -> bytes:
    """Run gpg against the private home and return its stdout; raise EncryptionError with stderr's first line."""
    command = [_tool("gpg"), "--homedir", str(home), *_COMMON, *args]
    try:
        done = subprocess.run(
            command,
            input=stdin,
            stdin=None if stdin is not None else subprocess.DEVNULL,
            capture_output=True,
            env=_env(home),
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise EncryptionError(f"gpg {args[-1]} timed out after {timeout:g}s") from None
    if done.returncode != 0:
        raise EncryptionError(f"gpg failed: {_first_line(done.stderr)}")
    return done.stdout


def _new_home() -> Path:
    """A fresh GnuPG home (mode 0700, as gpg requires) under the temp dir, short enough for socket paths."""
    return Path(tempfile.mkdtemp(prefix="ajo-gpg-"))


def _remove_home(home: Path) -> None:
    """Stop any daemon a GnuPG call may have started for the home, then delete it."""
    gpgconf = shutil.which("gpgconf")
    if gpgconf is not None and home.exists():
        try:
            subprocess.run(
                [gpgconf, "--homedir", str(home), "--kill", "all"],
                stdin=subprocess.DEVNULL,
                capture_output=True,
                env=_env(home),
                timeout=30,
                check=False,
            )
        except subprocess.TimeoutExpired:
            pass
    shutil.rmtree(home, ignore_errors=True)


def _armoured(public_key_b64: str) -> bytes:
    """Decode the Base64 key and check it is one armoured public key block, before gpg sees it."""
    if not isinstance(public_key_b64, str) or not public_key_b64.strip():
        raise EncryptionError(_BAD_KEY)
    try:
        raw = base64.b64decode("".join(public_key_b64.split()), validate=True)
        text = raw.decode("ascii")
    except (binascii.Error, ValueError):
        raise EncryptionError(_BAD_KEY) from None
    if _PRIVATE_HEADER in text:
        raise EncryptionError("pgp_public_key holds a private key block: give the public key only")
    if _PUBLIC_HEADER not in text:
        raise EncryptionError(_BAD_KEY)
    return raw


def _import_key(home: Path, public_key_b64: str) -> str:
    """Import the key into the home and return its primary fingerprint, refusing keys that cannot encrypt now."""
    armoured = _armoured(public_key_b64)
    try:
        _gpg(home, "--import", stdin=armoured, timeout=_IMPORT_TIMEOUT)
        imported = True
    except EncryptionError:
        imported = False  # gpg also fails on a key it imported but with some packets skipped: the listing decides
    listing = _gpg(home, "--with-colons", "--fixed-list-mode", "--list-keys", timeout=_IMPORT_TIMEOUT)
    keys: list[tuple[str, str, str]] = []
    for line in listing.decode("utf-8", errors="replace").splitlines():
        fields = line.split(":")
        if fields[0] == "pub":
            keys.append((fields[1], fields[11] if len(fields) > 11 else "", ""))
        elif fields[0] == "fpr" and keys and not keys[-1][2] and len(fields) > 9:
            validity, capabilities, _ = keys[-1]
            keys[-1] = (validity, capabilities, fields[9])
    if not keys and not imported:
        raise EncryptionError(_BAD_KEY)
    if len(keys) != 1 or not keys[0][2]:
        raise EncryptionError(f"pgp_public_key must hold exactly one OpenPGP public key, found {len(keys)}")
    validity, capabilities, fingerprint = keys[0]
    if validity == "r":
        raise EncryptionError(f"pgp_public_key {fingerprint} is revoked")
    if validity == "e":
        raise EncryptionError(f"pgp_public_key {fingerprint} has expired")
    if "E" not in capabilities:
        raise EncryptionError(f"pgp_public_key {fingerprint} has no valid key that can encrypt")
    return fingerprint


def public_key_fingerprint(public_key_b64: str) -> str:
    """Validate a destination's PGP key and return its primary fingerprint, so config errors surface before export."""
    home = _new_home()
    try:
        return _import_key(home, public_key_b64)
    finally:
        _remove_home(home)


class Encryptor:
    """Encrypts export files to one PGP public key, imported once into a private GnuPG home removed on close."""

    def __init__(self, public_key_b64: str) -> None:
        self._home = _new_home()
        self._finalizer = weakref.finalize(self, _remove_home, self._home)
        try:
            self.fingerprint: str = _import_key(self._home, public_key_b64)
        except BaseException:
            self._finalizer()
            raise

    @property
    def closed(self) -> bool:
        """Whether the GnuPG home is gone, after which encrypt refuses."""
        return not self._finalizer.alive

    def encrypt(self, src: Path, dst: Path) -> None:
        """Encrypt src to dst as binary OpenPGP, streamed by gpg; a failed run leaves no partial dst."""
        if self.closed:
            raise EncryptionError("the encryptor is closed")
        try:
            _gpg(
                self._home,
                "--yes",
                "--compress-level",
                "0",  # part files are already compressed: gzip, zstd, snappy
                "--trust-model",
                "always",
                "--recipient",
                self.fingerprint,
                "--output",
                str(dst),
                "--encrypt",
                str(src),
            )
        except EncryptionError:
            Path(dst).unlink(missing_ok=True)
            raise

    def close(self) -> None:
        """Stop any GnuPG daemon for the private home and delete it; safe to call twice."""
        self._finalizer()

    def __enter__(self) -> Encryptor:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
