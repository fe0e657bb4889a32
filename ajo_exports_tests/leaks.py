"""Every secret the suite creates, and everything Dagster and the tests printed, so one test can look for leaks.

Server fixtures register the secrets they make (keys, passwords, private keys); a hook keeps each test's captured
output and error text; `test_zz_no_secret_leaks.py`, which runs last, searches those, every on-disk Dagster
instance the suite used (event logs, compute logs, process logs) and the webserver's GraphQL answers.
"""

from __future__ import annotations

SECRETS: set[str] = set()
CAPTURED: list[tuple[str, str]] = []  # (test id, captured stdout + stderr + log + failure text)


def register_secret(value: str | None) -> None:
    if value and len(value) >= 8:
        SECRETS.add(value)
