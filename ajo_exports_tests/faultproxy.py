"""A fault-injecting TCP proxy for the fault tests: it sits between an exporter and a real server on 127.0.0.1.

Modes, switched at runtime while connections are open:
- pass-through (`disarm()`);
- `reset_after(n, ...)`: when the bytes sent client -> server (summed over connections since arming) cross `n`,
  every open connection is hard-closed (SO_LINGER 0, so the peers see an RST); once per cut point, and with
  `persistent=True` on every later byte too (the server seems gone until disarmed);
- `stall_after(n)`: past `n` bytes nothing is forwarded either way, the sockets stay open until `disarm()` or
  `close()` (a hung network path, not a refused one);
- `http_errors(k)`: the next `k` HTTP requests (one per new connection) are answered by the proxy itself, e.g.
  503 with S3's `SlowDown` XML, and the connection closed, without reaching the server.

`faults` counts what was injected: connections reset, chunks held by a stall, error answers.
Standard library only, so it is the same tool in CI as on a laptop.
"""

from __future__ import annotations

import socket
import struct
import threading
import time

# What a throttled store answers: S3's SlowDown, Azure's ServerBusy, GCS's JSON error; anything else gets text.
BODIES: dict[str, tuple[str, bytes, str]] = {
    "s3": ("application/xml", b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>SlowDown</Code>'
           b"<Message>Please reduce your request rate.</Message><RequestId>FAULTPROXY</RequestId></Error>", ""),
    "azure": ("application/xml", b'<?xml version="1.0" encoding="utf-8"?><Error><Code>ServerBusy</Code>'
              b"<Message>The server is busy.</Message></Error>", "x-ms-error-code: ServerBusy\r\n"),
    "gcs": ("application/json", b'{"error": {"code": 503, "message": "Service Unavailable (fault proxy)"}}', ""),
    "generic": ("text/plain", b"service unavailable (fault proxy)\n", ""),
}
REASONS = {429: "Too Many Requests", 500: "Internal Server Error", 502: "Bad Gateway", 503: "Service Unavailable"}


def _reset(sock: socket.socket) -> None:
    """Close with an RST: shutting the read side first wakes a thread blocked in recv on the same socket."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.shutdown(socket.SHUT_RD)
    except OSError:
        pass
    sock.close()


class FaultProxy:
    """One listening port on 127.0.0.1 forwarding to `target`; `flavor` picks the body of injected HTTP errors."""

    def __init__(self, host: str, port: int, flavor: str = "generic"):
        self.target, self.flavor = (host, port), flavor
        self._lock = threading.Lock()
        self._released = threading.Event()
        self._released.set()
        self._conns: set[socket.socket] = set()
        self._mode, self._persistent, self._errors, self._status = "pass", False, 0, 503
        self._cuts: list[int] = []
        self._body: bytes | None = None
        self.sent = 0  # client -> server bytes since the last arming (or start)
        self.faults = 0
        self.first_connection: float | None = None  # time.monotonic() of the first connection since arming
        self._listener = socket.create_server(("127.0.0.1", 0), backlog=128)
        self.port: int = self._listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True, name=f"faultproxy-{self.port}").start()

    @property
    def endpoint_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # -- arming --------------------------------------------------------------------------------------------

    def _arm(self, mode: str, cuts: tuple[int, ...] = (), persistent: bool = False, errors: int = 0) -> None:
        with self._lock:
            self._mode, self._cuts, self._persistent, self._errors = mode, sorted(cuts), persistent, errors
            self.sent = 0
            self.first_connection = None
        self._released.set()

    def disarm(self) -> None:
        """Pass everything through again; stalled connections resume."""
        self._arm("pass")

    def reset_after(self, *n_bytes: int, persistent: bool = False) -> None:
        """Reset every open connection each time the client's bytes since now cross one of `n_bytes`; with
        `persistent`, also on every byte after the last one (the server seems gone until disarmed)."""
        self._arm("reset", n_bytes, persistent)

    def stall_after(self, n_bytes: int) -> None:
        """Stop forwarding, both ways, when the client has sent `n_bytes` more, until disarmed."""
        self._arm("stall", (n_bytes,), persistent=True)

    def http_errors(self, k: int, status: int = 503, body: bytes | None = None) -> None:
        """Answer the next `k` requests with `status` (and this flavor's body unless given) without forwarding."""
        self._arm("pass", errors=k)
        self._status, self._body = status, body

    def close(self) -> None:
        self._released.set()
        self._listener.close()
        with self._lock:
            conns, self._conns = list(self._conns), set()
        for sock in conns:
            _reset(sock)

    # -- forwarding ----------------------------------------------------------------------------------------

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            with self._lock:
                self.first_connection = self.first_connection or time.monotonic()
                intercept = self._errors > 0
                self._errors -= intercept
            if intercept:
                threading.Thread(target=self._answer, args=(client,), daemon=True).start()
                continue
            try:
                upstream = socket.create_connection(self.target, timeout=10)
                upstream.settimeout(None)
            except OSError:
                _reset(client)
                continue
            with self._lock:
                self._conns |= {client, upstream}
            threading.Thread(target=self._pump, args=(client, upstream, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, False), daemon=True).start()

    def _meter(self, size: int) -> tuple[int, str]:
        """How many of `size` client bytes may pass, and what happens after them ("", "reset" or "stall")."""
        with self._lock:
            if self._mode == "pass" or not (self._cuts or self._persistent):
                self.sent += size
                return size, ""
            room = max(0, self._cuts[0] - self.sent) if self._cuts else 0
            self.sent += min(size, room)
            if size <= room:
                return size, ""
            self.faults += 1
            if self._cuts:
                self._cuts.pop(0)
            if self._mode == "stall":
                self._released.clear()
            return room, self._mode

    def _pump(self, src: socket.socket, dst: socket.socket, upstream: bool) -> None:
        try:
            while data := src.recv(65536):
                passing, action = self._meter(len(data)) if upstream else (len(data), "")
                if action != "stall":
                    self._released.wait()  # the downstream side holds back answers during a stall too
                if passing:
                    dst.sendall(data[:passing])
                if action == "reset":
                    self._reset_all()
                    return
                if action == "stall":
                    self._released.wait()
                    dst.sendall(data[passing:])
        except OSError:
            pass
        for sock in (src, dst):
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            with self._lock:
                self._conns.discard(sock)
            sock.close()

    def _reset_all(self) -> None:
        with self._lock:
            conns, self._conns = list(self._conns), set()
        for sock in conns:
            _reset(sock)

    # -- injected HTTP answers -------------------------------------------------------------------------------

    def _answer(self, client: socket.socket) -> None:
        """Read one request (its body too unless the client waits for 100-continue), answer the error, close."""
        try:
            client.settimeout(5)
            data = b""
            while b"\r\n\r\n" not in data and len(data) < 65536:
                if not (chunk := client.recv(65536)):
                    break
                data += chunk
            head, _, body = data.partition(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
            if "100-continue" not in headers.get("expect", "").lower():
                left = int(headers.get("content-length", "0") or 0) - len(body)
                while left > 0 and (chunk := client.recv(min(left, 65536))):
                    left -= len(chunk)
            kind, default, extra = BODIES.get(self.flavor, BODIES["generic"])
            payload = default if self._body is None else self._body
            reply = (f"HTTP/1.1 {self._status} {REASONS.get(self._status, 'Error')}\r\nContent-Type: {kind}\r\n"
                     f"Content-Length: {len(payload)}\r\n{extra}Connection: close\r\n\r\n").encode()
            client.sendall(reply if lines[0].startswith("HEAD ") else reply + payload)
            with self._lock:
                self.faults += 1
            client.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        finally:
            client.close()
