"""PGP encryption of export files: real GnuPG, a throwaway key pair, round trips and refused keys."""

from __future__ import annotations

import base64
import shutil
import subprocess
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import polars as pl
import pytest

from ajo_exports.export.encryption import ENCRYPTED_SUFFIX, EncryptionError, Encryptor, public_key_fingerprint
from ajo_exports_tests.pgp import KeyPair, _agents, _b64, _gen_key, _gpg


@pytest.fixture
def parquet(tmp_path: Path) -> tuple[Path, pl.DataFrame]:
    frame = pl.DataFrame(
        {
            "id": list(range(5_000)),
            "journey": [f"journey-{i % 37}" for i in range(5_000)],
            "score": [i / 7 for i in range(5_000)],
        }
    )
    path = tmp_path / "part-00000.parquet"
    frame.write_parquet(path)
    return path, frame


def test_fingerprint_matches_the_generated_key(key_pair: KeyPair) -> None:
    assert public_key_fingerprint(key_pair.public_b64) == key_pair.fingerprint


def test_fingerprint_accepts_wrapped_base64(key_pair: KeyPair) -> None:
    wrapped = "\n".join(key_pair.public_b64[i : i + 76] for i in range(0, len(key_pair.public_b64), 76))
    assert public_key_fingerprint(wrapped + "\n") == key_pair.fingerprint


def test_encrypted_parquet_decrypts_to_the_same_bytes_and_rows(
    key_pair: KeyPair, parquet: tuple[Path, pl.DataFrame], tmp_path: Path
) -> None:
    plain, frame = parquet
    encrypted = tmp_path / (plain.name + ENCRYPTED_SUFFIX)
    with Encryptor(key_pair.public_b64) as encryptor:
        assert encryptor.fingerprint == key_pair.fingerprint
        encryptor.encrypt(plain, encrypted)

    ciphertext = encrypted.read_bytes()
    assert ciphertext != plain.read_bytes()
    assert not ciphertext.startswith(b"-----BEGIN"), "output must be binary OpenPGP, not armoured"
    assert b"PAR1" not in ciphertext[:64]

    decrypted = tmp_path / "decrypted.parquet"
    _gpg(
        key_pair.home,
        "--pinentry-mode",
        "loopback",
        "--passphrase",
        "",
        "--output",
        str(decrypted),
        "--decrypt",
        str(encrypted),
    )
    assert decrypted.read_bytes() == plain.read_bytes()
    assert pl.read_parquet(decrypted).equals(frame)


def test_encrypt_in_parallel_threads(key_pair: KeyPair, parquet: tuple[Path, pl.DataFrame], tmp_path: Path) -> None:
    plain, _ = parquet
    targets = [tmp_path / f"part-{i:05d}.parquet{ENCRYPTED_SUFFIX}" for i in range(6)]
    with Encryptor(key_pair.public_b64) as encryptor, ThreadPoolExecutor(max_workers=6) as pool:
        list(pool.map(lambda dst: encryptor.encrypt(plain, dst), targets))
    for target in targets:
        out = tmp_path / (target.name + ".out")
        _gpg(key_pair.home, "--output", str(out), "--decrypt", str(target))
        assert out.read_bytes() == plain.read_bytes()


@pytest.mark.parametrize(
    "make_key",
    [
        pytest.param(lambda kp: "this is not a key at all", id="plain-text"),
        pytest.param(lambda kp: _b64(b"\x8f\x01 some garbage bytes \xff" * 8), id="base64-of-garbage"),
        pytest.param(lambda kp: _b64(b"just some ascii text, no armour"), id="base64-of-text"),
        pytest.param(lambda kp: base64.b64decode(kp.public_b64).decode(), id="armour-not-base64"),
        pytest.param(
            lambda kp: _b64(
                b"-----BEGIN PGP PUBLIC KEY BLOCK-----\n\nAAAA\n=AAAA\n-----END PGP PUBLIC KEY BLOCK-----\n"
            ),
            id="broken-armour",
        ),
        pytest.param(lambda kp: kp.private_b64, id="private-key-block"),
        pytest.param(lambda kp: "", id="empty"),
    ],
)
def test_bad_keys_are_refused_without_echoing_them(make_key, key_pair: KeyPair) -> None:
    bad = make_key(key_pair)
    for attempt in (lambda: public_key_fingerprint(bad), lambda: Encryptor(bad)):
        with pytest.raises(EncryptionError) as caught:
            attempt()
        message = str(caught.value)
        assert "\n" not in message
        assert "BEGIN PGP" not in message
        assert "=" not in message
        if bad:
            assert bad[:16] not in message and bad[-16:] not in message
        assert caught.value.__cause__ is None


def test_private_key_block_is_named(key_pair: KeyPair) -> None:
    with pytest.raises(EncryptionError, match="private key block"):
        public_key_fingerprint(key_pair.private_b64)


def test_expired_and_sign_only_keys_are_refused() -> None:
    home = Path(tempfile.mkdtemp(prefix="ajo-test-gpg-"))
    try:
        expired = _gen_key(
            home, "old <old@example.invalid>", "encrypt,sign", "1d", "--faked-system-time", "20200101T000000"
        )
        sign_only = _gen_key(home, "signer <signer@example.invalid>", "sign", "never")
        with pytest.raises(EncryptionError, match="has expired"):
            public_key_fingerprint(_b64(_gpg(home, "--armor", "--export", expired)))
        with pytest.raises(EncryptionError, match="can encrypt"):
            Encryptor(_b64(_gpg(home, "--armor", "--export", sign_only)))
        with pytest.raises(EncryptionError, match="exactly one"):
            public_key_fingerprint(_b64(_gpg(home, "--armor", "--export", expired, sign_only)))
    finally:
        subprocess.run(["gpgconf", "--homedir", str(home), "--kill", "all"], capture_output=True, check=False)
        shutil.rmtree(home, ignore_errors=True)


def test_failed_encrypt_is_one_line_and_leaves_no_output(key_pair: KeyPair, tmp_path: Path) -> None:
    dst = tmp_path / "missing.parquet.gpg"
    with Encryptor(key_pair.public_b64) as encryptor:
        with pytest.raises(EncryptionError) as caught:
            encryptor.encrypt(tmp_path / "missing.parquet", dst)
    assert "\n" not in str(caught.value)
    assert "missing.parquet" in str(caught.value)
    assert not dst.exists()


def test_no_daemon_survives_close(key_pair: KeyPair, parquet: tuple[Path, pl.DataFrame], tmp_path: Path) -> None:
    plain, _ = parquet
    encryptor = Encryptor(key_pair.public_b64)
    home = encryptor._home
    encryptor.encrypt(plain, tmp_path / "a.gpg")
    assert _agents(home) == "", "importing and encrypting must not start a gpg-agent or dirmngr"

    # Start an agent on purpose, so close is shown to stop one rather than merely finding none.
    subprocess.run(["gpg-connect-agent", "--homedir", str(home), "/bye"], capture_output=True, timeout=30, check=True)
    assert "gpg-agent" in _agents(home)

    encryptor.close()
    encryptor.close()
    assert _agents(home) == ""
    assert not home.exists()
    with pytest.raises(EncryptionError, match="closed"):
        encryptor.encrypt(plain, tmp_path / "b.gpg")


def test_fingerprint_leaves_no_home_or_daemon(key_pair: KeyPair) -> None:
    before = set(Path(tempfile.gettempdir()).glob("ajo-gpg-*"))
    public_key_fingerprint(key_pair.public_b64)
    assert set(Path(tempfile.gettempdir()).glob("ajo-gpg-*")) == before
