"""Follow a running export from its run's event log: rows, bytes and parts so far per export, and their rate.

The IO manager writes a structured `export progress {...}` line to the run's log after each published part (at
most once a second per export); whatever executes the run (this process, step processes, a Celery worker), the
lines reach the instance's event log, where this watcher reads them with a cursor. On a terminal the display is
redrawn in place; otherwise each update is one plain line.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import TextIO

from dagster import DagsterInstance, RunsFilter

from ajo_exports.export.io_manager import ProgressLog

RUN_TAG = "ajo/cli_run"  # tags the run a CLI command starts, so the watcher finds it before its id is known


@dataclass
class ExportState:
    asset: str
    rows: int = 0
    planned_rows: int = 0
    bytes: int = 0
    parts: int = 0
    seconds: float = 0.0

    def line(self) -> str:
        share = f"{100 * self.rows / self.planned_rows:5.1f}%" if self.planned_rows else "  -  "
        rate = self.rows / self.seconds if self.seconds > 0 else 0.0
        mb_s = self.bytes / 1e6 / self.seconds if self.seconds > 0 else 0.0
        return (
            f"{self.asset}  {share}  {self.rows:,}/{self.planned_rows:,} rows  {self.bytes / 1e6:,.1f} MB  "
            f"{self.parts} parts  {rate:,.0f} rows/s  {mb_s:,.1f} MB/s"
        )


def parse(message: str) -> dict | None:
    """The fields of a progress line, or None for any other log message."""
    if not message.startswith(ProgressLog.PREFIX):
        return None
    try:
        return json.loads(message[len(ProgressLog.PREFIX) :])
    except ValueError:
        return None


class ProgressDisplay:
    """Renders export states: redrawn in place on a terminal, one plain line per update otherwise."""

    def __init__(self, stream: TextIO):
        self.stream = stream
        self.tty = stream.isatty()
        self.states: dict[str, ExportState] = {}
        self._drawn = 0

    def update(self, fields: dict) -> None:
        state = self.states.setdefault(fields["asset"], ExportState(fields["asset"]))
        for name in ("rows", "planned_rows", "bytes", "parts", "seconds"):
            setattr(state, name, fields.get(name, getattr(state, name)))
        if self.tty:
            self._redraw()
        else:
            print(state.line(), file=self.stream, flush=True)

    def _redraw(self) -> None:
        up = f"\x1b[{self._drawn}F" if self._drawn else ""
        lines = [f"\x1b[2K{state.line()}" for state in self.states.values()]
        self.stream.write(up + "\n".join(lines) + "\n")
        self.stream.flush()
        self._drawn = len(lines)


class RunWatcher:
    """Polls the instance for the tagged run's progress lines in a thread while the run executes."""

    def __init__(self, instance: DagsterInstance, tag: str, on_progress: Callable[[dict], None], every: float = 0.5):
        self.instance, self.tag, self.on_progress, self.every = instance, tag, on_progress, every
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="ajo-progress", daemon=True)
        self._run_id: str | None = None
        self._cursor: str | None = None

    def __enter__(self) -> RunWatcher:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.poll()  # the last lines, written just before the run ended

    def _loop(self) -> None:
        while not self._stop.wait(self.every):
            try:
                self.poll()
            except Exception:  # noqa: BLE001 - progress is best effort; the run's own outcome is what counts
                continue

    def poll(self) -> None:
        if self._run_id is None:
            records = self.instance.get_run_records(RunsFilter(tags={RUN_TAG: self.tag}), limit=1)
            if not records:
                return
            self._run_id = records[0].dagster_run.run_id
        while True:
            page = self.instance.get_records_for_run(self._run_id, cursor=self._cursor, limit=1000)
            for record in page.records:
                entry = record.event_log_entry
                fields = parse(entry.user_message or "") if entry.dagster_event is None else None
                if fields is not None:
                    self.on_progress(fields)
            self._cursor = page.cursor
            if not page.has_more:
                return
