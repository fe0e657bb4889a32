"""Measure a subprocess tree: wall time, CPU time and peak RSS of the process and all its descendants.

`ru_maxrss` of a child is the peak of one process, not of the tree, so the tree's RSS is sampled instead: every
~50 ms the RSS of the process and all its live descendants is summed and the maximum kept. RSS counts shared
pages once per process, so the tree figure slightly over-states what the machine had to hold. CPU time comes from
`RUSAGE_CHILDREN` around the wait: it includes every descendant that was waited for (Python's subprocess and
multiprocessing both reap theirs), and nothing of long-running siblings such as the servers.
"""

from __future__ import annotations

import os
import platform
import resource
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import psutil

SAMPLE_SECONDS = 0.05
MiB = 1024 * 1024


@dataclass
class Measured:
    """One subprocess run: what it cost and what it printed."""

    wall_s: float
    cpu_s: float
    peak_rss_mib: float
    returncode: int
    stdout: str
    stderr: str

    def check(self, what: str) -> Measured:
        """Fail loudly (with the tail of stderr) when the command did not succeed: a failed case is no result."""
        if self.returncode != 0:
            tail = "\n".join((self.stderr or self.stdout).strip().splitlines()[-25:])
            raise RuntimeError(f"{what} exited with {self.returncode}:\n{tail}")
        return self


def tree_rss(root: psutil.Process) -> int:
    """Bytes resident in `root` and every live descendant right now (processes that vanish count 0)."""
    total = 0
    try:
        members = [root, *root.children(recursive=True)]
    except psutil.Error:
        return 0
    for member in members:
        try:
            total += member.memory_info().rss
        except psutil.Error:
            pass
    return total


def tree_cpu(pid: int) -> float:
    """user+system seconds of a live process tree so far (for the servers, which are never reaped mid-run)."""
    try:
        root = psutil.Process(pid)
        members = [root, *root.children(recursive=True)]
    except psutil.Error:
        return 0.0
    total = 0.0
    for member in members:
        try:
            times = member.cpu_times()
            total += times.user + times.system + times.children_user + times.children_system
        except psutil.Error:
            pass
    return total


def run_measured(
    command: list[str], *, env: dict[str, str] | None = None, cwd: Path | None = None, timeout: float | None = None
) -> Measured:
    """Run `command`, sampling the RSS of its whole tree; output goes to files so a chatty child never blocks."""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        started = time.perf_counter()
        process = subprocess.Popen(command, env=env, cwd=cwd, stdout=out, stderr=err, stdin=subprocess.DEVNULL)
        peak = 0
        done = threading.Event()

        def sample() -> None:
            nonlocal peak
            try:
                root = psutil.Process(process.pid)
            except psutil.Error:
                return
            while not done.is_set():
                peak = max(peak, tree_rss(root))
                done.wait(SAMPLE_SECONDS)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
            raise
        finally:
            done.set()
            sampler.join()
        wall = time.perf_counter() - started
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        out.seek(0)
        err.seek(0)
        return Measured(
            wall_s=wall,
            cpu_s=(after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime),
            peak_rss_mib=peak / MiB,
            returncode=process.returncode,
            stdout=out.read(),
            stderr=err.read(),
        )


def machine() -> dict[str, object]:
    """What the figures were measured on: they mean little without it."""
    model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "nproc": os.cpu_count(),
        "cpu_model": model,
        "ram_gib": round(psutil.virtual_memory().total / 1024**3, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
    }


def source(repo: Path) -> str:
    """Which product the figures are of: $BENCH_SOURCE, else the checkout's commit and whether it had changes."""
    if os.environ.get("BENCH_SOURCE"):
        return os.environ["BENCH_SOURCE"]
    try:
        rev = subprocess.run(["git", "-C", str(repo), "rev-parse", "--short", "HEAD"], capture_output=True,
                             text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(repo), "status", "--porcelain", "--", "ajo_exports"],
                               capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown (not a git checkout)"
    return f"commit {rev}" + (" with uncommitted changes in ajo_exports/" if dirty else "")
