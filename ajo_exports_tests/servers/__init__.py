"""Real servers on 127.0.0.1 for the tests, each started by a fixture."""

from __future__ import annotations

import random
import socket
from pathlib import Path

_HANDED_OUT: set[int] = set()


def _ephemeral_range() -> tuple[int, int]:
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32768, 60999


def free_port() -> int:
    """A free port below the kernel's ephemeral range.

    A port the kernel handed out (bind to 0) can be taken as the local port of any outgoing connection the moment
    it is released, so a server stopped and restarted on it may find it busy. Ports below the range are never
    picked for outgoing connections; each is handed out once per test session."""
    low, _ = _ephemeral_range()
    picker = random.Random()
    for _ in range(1000):
        port = picker.randrange(max(1024, low - 12000), low)
        if port in _HANDED_OUT:
            continue
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
        _HANDED_OUT.add(port)
        return port
    raise RuntimeError(f"no free port between {max(1024, low - 12000)} and {low}")
