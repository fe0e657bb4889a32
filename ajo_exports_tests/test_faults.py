"""Delivery under faults, through the real `ajo-exports run` against the real servers (moto, Azurite, the GCS
emulator, sshd), with a fault proxy (ajo_exports_tests.faultproxy) in the middle.

The promise under test: after any run, failed or not, a window at the destination holds no manifest or one
complete, correct manifest; after a rerun of the same window every lake row is delivered exactly once, read the
way a receiver reads it (every part file under the dataset's folder, with polars). Transient faults (503,
throttling, a stalled connection) are retried and the export succeeds; terminal ones fail within seconds,
naming the permission.

Trials are real subprocess runs, two lanes (each with its own proxy, home and Dagster instance) at a time, so the
module fits CI's budget on 2 cores. Cut points and kill times come from one seeded `random.Random`: the seed is in
every failure message and in the figures; rerun with `AJO_FAULT_SEED=<seed>` to replay a failure, or
`AJO_FAULT_SEED=random` for new cut points.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

import polars as pl
import pytest
import yaml

from ajo_exports.catalog import get_dataset
from ajo_exports.export.manifest import is_manifest
from ajo_exports_tests.faultproxy import FaultProxy
from ajo_exports_tests.figures import add, record
from ajo_exports_tests.servers.azurite import Azurite
from ajo_exports_tests.servers.gcs import EMULATOR_KEY, GcsEmulator
from ajo_exports_tests.servers.s3 import MotoServer
from ajo_exports_tests.servers.sshd import Sshd

# A fixed default: CI replays cut points that a full run has passed (1051802160, 2026-12-02); AJO_FAULT_SEED=random
# draws new ones, any other number replays that run.
_SEED = os.environ.get("AJO_FAULT_SEED", "1051802160")
SEED = random.SystemRandom().randrange(1 << 32) if _SEED == "random" else int(_SEED)
# One dataset of 173 rows in scope (of the session lake's 200), 7 part files: a trial's cost is mostly the run's
# start-up, and a second dataset would double the retries a failing run waits out, not the paths it covers.
DATASETS = ["journey_step_events"]
MAX_ROWS = 25
EXPORT_TIME = "2026-11-30T03:00:00Z"  # every seeded event is within the 365 days before it
WINDOW = "exportTime=202611300300"
TRIALS, KILL_TRIALS, LANES = 20, 10, 3  # a failing run mostly waits in backoff: 3 lanes fill 2 cores
RUN_TIMEOUT = 240
EXE = Path(sys.executable).parent / "ajo-exports"
KEY_ENV, SECRET_ENV = "AJO_FAULT_KEY", "AJO_FAULT_SECRET"
CLEAN: dict[str, tuple[int, float]] = {}  # destination -> (bytes a clean run sends, its seconds), measured once
BASE_ENV = {"AWS_EC2_METADATA_DISABLED": "true", "NO_GCE_CHECK": "true", "DAGSTER_DISABLE_TELEMETRY": "1"}


# --- destinations, seen through the store's own SDK or filesystem ------------------------------------------------

@dataclass
class Target:
    """One destination: its exports.yaml entry for a folder and endpoint, its secrets, and a direct view of it.

    `files(prefix)` lists full keys (relative to the bucket, container or root) with sizes; `read(key)` reads one.
    """

    name: str
    flavor: str  # the fault proxy's HTTP error flavor; "" for a destination reached without the network
    upstream: tuple[str, int] | None
    destination: Callable[[str, int | None], dict]  # (folder, proxy port) -> the destination's config
    env: Callable[[int | None], dict[str, str]]
    files: Callable[[str], dict[str, int]]
    read: Callable[[str], bytes]


def s3_target(server: MotoServer) -> Target:
    """A bucket of its own on the session's moto server, written with the writer's keys."""
    bucket = server.create_bucket()
    client = server.s3()

    def files(prefix: str) -> dict[str, int]:
        pages = client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        return {item["Key"]: item["Size"] for page in pages for item in page.get("Contents", [])}

    def destination(folder: str, port: int | None) -> dict:
        return {"name": "out", "type": "amazon_s3", "bucket": bucket, "folder": folder, "region": "us-east-1",
                "endpoint_url": f"http://127.0.0.1:{port or server.port}",
                "access_key_id": f"${{{KEY_ENV}}}", "secret_access_key": f"${{{SECRET_ENV}}}"}

    assert server.writer is not None
    keys = {KEY_ENV: server.writer.access_key_id, SECRET_ENV: server.writer.secret_access_key}
    return Target("s3", "s3", ("127.0.0.1", server.port), destination, lambda port: keys, files,
                  lambda key: client.get_object(Bucket=bucket, Key=key)["Body"].read())


def azure_target(azurite: Azurite) -> Target:
    """A container of its own on the session's Azurite; the connection string's BlobEndpoint is the proxy."""
    container = azurite.create_container()

    def env(port: int | None) -> dict[str, str]:
        endpoint = f"http://127.0.0.1:{port or azurite.port}/{azurite.account}"
        return {SECRET_ENV: f"DefaultEndpointsProtocol=http;AccountName={azurite.account};"
                            f"AccountKey={azurite.account_key};BlobEndpoint={endpoint};"}

    return Target(
        "azure", "azure", ("127.0.0.1", azurite.port),
        lambda folder, port: {"name": "out", "type": "azure_blob", "container": container.container_name,
                              "folder": folder, "connection_string": f"${{{SECRET_ENV}}}"},
        env, lambda prefix: {b.name: b.size for b in container.list_blobs(name_starts_with=prefix)},
        lambda key: container.download_blob(key).readall(),
    )


def gcs_target(server: GcsEmulator) -> Target:
    """A bucket of its own on the session's GCS emulator, over the JSON API (resumable uploads)."""
    bucket = server.create_bucket()
    client = server.client()
    return Target(
        "gcs", "gcs", ("127.0.0.1", server.port),
        lambda folder, port: {"name": "out", "type": "google_cloud_storage", "bucket": bucket, "folder": folder,
                              "endpoint_url": f"http://127.0.0.1:{port or server.port}",
                              "service_account_json": f"${{{KEY_ENV}}}"},
        lambda port: {KEY_ENV: EMULATOR_KEY},
        lambda prefix: {b.name: int(b.size or 0) for b in client.list_blobs(bucket, prefix=prefix)},
        lambda key: client.bucket(bucket).blob(key).download_as_bytes(),
    )


def filesystem(root: Path) -> tuple[Callable[[str], dict[str, int]], Callable[[str], bytes]]:
    """List and read a destination's files on this machine's filesystem (the SFTP server's or a local folder)."""
    def files(prefix: str) -> dict[str, int]:
        base = root / prefix.rsplit("/", 1)[0] if "/" in prefix else root
        found = (p for p in base.rglob("*") if p.is_file()) if base.is_dir() else iter(())
        return {key: path.stat().st_size for path in found if (key := path.relative_to(root).as_posix())
                .startswith(prefix)}
    return files, lambda key: (root / key).read_bytes()


def sftp_target(server: Sshd) -> Target:
    """A folder of its own under the login folder of the session's sshd, checked on the server's disk; the host
    key is pinned for the proxy's address, as `ssh-keyscan -p <proxy port>` would record it."""
    def destination(folder: str, port: int | None) -> dict:
        host_id = f"[127.0.0.1]:{port or server.port}"
        known = "".join(f"{host_id} {key.get_name()} {key.get_base64()}\n"
                        for key in (server.host_key("ed25519"), server.host_key("rsa")))
        return {"name": "out", "type": "sftp", "host": "127.0.0.1", "port": port or server.port,
                "username": server.username, "private_key": f"${{{KEY_ENV}}}", "known_hosts": known,
                "folder": folder}

    top = f"faults-{uuid.uuid4().hex[:8]}"  # a relative folder: under the login folder, on this machine's disk
    files, read = filesystem(server.home / top)
    return Target("sftp", "", ("127.0.0.1", server.port),
                  lambda folder, port: destination(f"{top}/{folder}", port),
                  lambda port: {KEY_ENV: server.private_key}, files, read)


def local_target(root: Path) -> Target:
    """The embedded local folder: no network, so only the SIGKILL trials use it."""
    files, read = filesystem(root)
    return Target("local", "", None, lambda folder, port: {"name": "out", "type": "local", "path": str(root),
                                                           "folder": folder},
                  lambda port: {}, files, read)


# --- lanes: a home, a Dagster instance and a proxy of their own; runs go one after the other in a lane ----------

@dataclass
class Outcome:
    """How one `ajo-exports run` ended (exit code -9 when killed)."""

    code: int
    out: str
    err: str
    seconds: float
    killed: bool = False

    @property
    def tail(self) -> str:
        return (self.err.strip() or self.out.strip())[-1500:]


@dataclass
class Lane:
    """Where one sequence of trials runs: its own home (a copy of the session lake), Dagster instance, proxy and
    destination folder, so lanes run side by side without sharing a byte counter or a window."""

    target: Target
    home: Path
    name: str
    proxy: FaultProxy | None = None
    folder: str = ""
    log: list[str] = field(default_factory=list)

    @property
    def config(self) -> Path:
        return self.home / "exports.yaml"

    def use(self, folder: str, **destination: object) -> None:
        """Point the lane's exports.yaml at `folder` (under the lane's own folder) through the proxy."""
        self.folder = f"{self.name}/{folder}"
        dest = {**self.target.destination(self.folder, self.proxy.port if self.proxy else None), **destination}
        flow = {"name": "faults", "destination": "out", "datasets": DATASETS, "max_rows_per_file": MAX_ROWS}
        config = {"destinations": [dest], "dataflows": [flow], "execution": {"max_concurrent": 1}}
        self.config.write_text(yaml.safe_dump(config, sort_keys=False))

    def run(self, *, kill_after: float | None = None, env: dict[str, str] | None = None) -> Outcome:
        """One real `ajo-exports run` of the lane's dataflow; `kill_after` SIGKILLs its process group then."""
        environment = {**os.environ, **BASE_ENV, "AJO_EXPORTS_HOME": str(self.home),
                       "AJO_EXPORTS_CONFIG": str(self.config), "DAGSTER_HOME": str(self.home / "dagster"),
                       **self.target.env(self.proxy.port if self.proxy else None), **(env or {})}
        started = time.monotonic()
        process = subprocess.Popen([str(EXE), "run", "--dataflow", "faults", "--export-time", EXPORT_TIME],
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=self.home,
                                   env=environment, start_new_session=True)
        killed = False
        try:
            if kill_after is not None:
                try:
                    process.wait(kill_after)
                except subprocess.TimeoutExpired:
                    os.killpg(process.pid, signal.SIGKILL)
                    killed = True
            out, err = process.communicate(timeout=RUN_TIMEOUT)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            out, err = process.communicate()
            pytest.fail(f"ajo-exports run did not end within {RUN_TIMEOUT}s (seed {SEED}): {err[-1500:]}")
        outcome = Outcome(process.returncode, out, err, time.monotonic() - started, killed)
        self.log.append(f"{self.folder}: exit {outcome.code} in {outcome.seconds:.1f}s")
        return outcome


def make_lanes(target: Target, tmp: Path, lake_root: Path, count: int = LANES) -> list[Lane]:
    """`count` lanes to `target`, each behind a proxy of its own (none for a local folder)."""
    lanes = []
    for number in range(count):
        home = tmp / f"{target.name}-lane{number}"
        shutil.copytree(lake_root, home / "lake")
        (home / "dagster").mkdir()
        proxy = FaultProxy(*target.upstream, flavor=target.flavor) if target.upstream else None
        lanes.append(Lane(target, home, f"lane{number}-{uuid.uuid4().hex[:6]}", proxy))
    return lanes


def close_lanes(lanes: list[Lane]) -> None:
    """Stop the lanes' proxies (and reset what they still hold open)."""
    for lane in lanes:
        if lane.proxy is not None:
            lane.proxy.close()


# --- what a window and a dataset folder must hold ----------------------------------------------------------------

def lake_ids(lake: Path, slug: str) -> pl.Series:
    """Every `_id` an export of `slug` must deliver, read straight from the batch files the lake's index lists:
    all of them, or for an event dataset those of the 365 days before the export time (AEP's export scope)."""
    entries = json.loads((lake / slug / "_batches.json").read_text())
    frame = pl.concat([pl.read_parquet(lake / slug / entry["file"]) for entry in entries])
    if get_dataset(slug).is_time_series:
        since = datetime.fromisoformat(EXPORT_TIME) - timedelta(days=365)
        frame = frame.filter(pl.col("timestamp") >= since)
    return frame["_id"]


def window_state(lane: Lane, slug: str) -> str:
    """After any run: no manifest in the window, or exactly one whose files are all there, with the sizes, sha256
    and row counts it lists, and nothing else in the window. Returns "absent" or "complete"."""
    prefix = f"{lane.folder}/{get_dataset(slug).dataset_id}/{WINDOW}/"
    found = lane.target.files(prefix)
    manifests = [key for key in found if is_manifest(key)]  # not a `manifest-*.json.part` an upload left
    assert len(manifests) <= 1, f"seed {SEED}: several manifests in {prefix}: {manifests}"
    if not manifests:
        return "absent"
    body = json.loads(lane.target.read(manifests[0]))
    listed = {prefix + item["name"]: item for item in body["exportResults"]}
    assert set(found) - set(manifests) == set(listed), f"seed {SEED}: {prefix} holds {sorted(found)}, manifest {body}"
    total = 0
    for key, item in listed.items():
        data = lane.target.read(key)
        assert found[key] == item["size"] == len(data), f"seed {SEED}: size of {key}"
        assert hashlib.sha256(data).hexdigest() == item["sha256"], f"seed {SEED}: sha256 of {key}"
        assert pl.read_parquet(io.BytesIO(data)).height == item["rows"], f"seed {SEED}: rows of {key}"
        total += item["rows"]
    assert total == body["totalRows"], f"seed {SEED}: {prefix} manifest totalRows"
    return "complete"


def exactly_once(lane: Lane, slug: str) -> None:
    """A receiver's view after the rerun: every part file under the dataset's folder, read with polars, holds
    each lake `_id` once, and nothing but the window's part files and its manifest is there."""
    prefix = f"{lane.folder}/{get_dataset(slug).dataset_id}/"
    found = lane.target.files(prefix)
    parts = [key for key in found if not is_manifest(key)]
    assert window_state(lane, slug) == "complete", f"seed {SEED}: no manifest after the rerun in {prefix}"
    assert all(key.startswith(prefix + WINDOW + "/") for key in found), f"seed {SEED}: strays {sorted(found)}"
    delivered = pl.concat([pl.read_parquet(io.BytesIO(lane.target.read(key)), columns=["_id"]) for key in parts])
    expected = lake_ids(lane.home / "lake", slug)
    duplicates = delivered.height - delivered["_id"].n_unique()
    lost = len(set(expected) - set(delivered["_id"]))
    add("faults", "rows_compared", expected.len())
    add("faults", "duplicates_found", duplicates)
    add("faults", "lost", lost)
    assert duplicates == 0 and lost == 0, f"seed {SEED}: {slug} at {prefix}: {duplicates} duplicates, {lost} lost"
    assert sorted(delivered["_id"]) == sorted(expected), f"seed {SEED}: {slug} rows differ from the lake"


def rerun_delivers_exactly_once(lane: Lane) -> None:
    """The promise after a failed run: the same window, run again without faults, holds every row once."""
    if lane.proxy is not None:
        lane.proxy.disarm()
    outcome = lane.run()
    add("faults", "reruns")
    assert outcome.code == 0, f"seed {SEED}: the rerun failed in {lane.folder}: {outcome.tail}"
    for slug in DATASETS:
        exactly_once(lane, slug)


def settle(lane: Lane, outcome: Outcome, fault: str, injected: int, kind: str = "trials") -> None:
    """After a run under a fault: the window is absent or complete (complete if the run succeeded); a failed run
    is rerun; either way every lake row must then be delivered exactly once. A run that succeeded despite the
    fault is not rerun: it must already have delivered exactly once (the next trial replaces its window)."""
    name = lane.target.name
    add("faults", f"{name}_{kind}")
    add("faults", "faults_injected" if kind == "trials" else "processes_killed", injected)
    add("faults", "failed_runs", int(outcome.code != 0))
    add("faults", f"{name}_failed_runs", int(outcome.code != 0))
    assert "Traceback" not in outcome.err, f"seed {SEED}: {outcome.tail}"
    states = [window_state(lane, slug) for slug in DATASETS]
    lane.log.append(f"  {fault}: faults={injected} exit={outcome.code} in {outcome.seconds:.1f}s -> {states}")
    if outcome.code == 0:
        assert states == ["complete"] * len(DATASETS), f"seed {SEED}: success without manifests: {states}"
        for slug in DATASETS:
            exactly_once(lane, slug)
    else:
        rerun_delivers_exactly_once(lane)


def clean_run(lane: Lane) -> Outcome:
    """A run without faults in a folder of its own: what a trial's cut point or kill time is chosen within."""
    lane.use("clean")
    if lane.proxy is not None:
        lane.proxy.disarm()
    outcome = lane.run()
    assert outcome.code == 0, f"the clean run failed: {outcome.tail}"
    for slug in DATASETS:
        exactly_once(lane, slug)
    return outcome


def measure(lane: Lane) -> int:
    """Bytes a clean run sends through the lane's proxy (remembered for the destination's later tests)."""
    assert lane.proxy is not None
    outcome = clean_run(lane)
    CLEAN.setdefault(lane.target.name, (lane.proxy.sent, outcome.seconds))
    return lane.proxy.sent


def in_lanes(lanes: list[Lane], trials: int, trial: Callable[[Lane, int, random.Random], None]) -> None:
    """Trials split over the lanes, which run at the same time; each lane has its own seeded generator."""
    def work(number: int) -> None:
        rng = random.Random(f"{SEED}-{lanes[number].target.name}-{number}")
        for index in range(number, trials, len(lanes)):
            trial(lanes[number], index, rng)

    with ThreadPoolExecutor(len(lanes)) as pool:
        for future in [pool.submit(work, number) for number in range(len(lanes))]:
            future.result()


# --- fixtures ----------------------------------------------------------------------------------------------------

TARGETS: dict[str, Callable[[pytest.FixtureRequest, Path], Target]] = {
    "s3": lambda request, tmp: s3_target(request.getfixturevalue("s3_server")),
    "azure": lambda request, tmp: azure_target(request.getfixturevalue("azurite")),
    "gcs": lambda request, tmp: gcs_target(request.getfixturevalue("gcs_server")),
    "sftp": lambda request, tmp: sftp_target(request.getfixturevalue("sftp_server")),
    "local": lambda request, tmp: local_target(tmp / "local-exports"),
}


@pytest.fixture
def lanes(request: pytest.FixtureRequest, tmp_path: Path, lake_root: Path) -> Iterator[list[Lane]]:
    made = make_lanes(TARGETS[request.param](request, tmp_path), tmp_path, lake_root)
    yield made
    close_lanes(made)


@pytest.fixture
def lane(request: pytest.FixtureRequest, tmp_path: Path, lake_root: Path) -> Iterator[Lane]:
    made = make_lanes(TARGETS[request.param](request, tmp_path), tmp_path, lake_root, count=1)
    yield made[0]
    close_lanes(made)


# --- a. connections reset at random cut points ---------------------------------------------------------------

@pytest.mark.parametrize("lanes", ["s3", "azure", "gcs", "sftp"], indirect=True)
def test_reset_at_random_cut_points(lanes: list[Lane]) -> None:
    """A connection reset after a random number of bytes, once (a blip the retries absorb) or for good (the
    server is gone until the rerun): the window is absent or complete, then the rerun delivers exactly once."""
    sent = measure(lanes[0])
    name = lanes[0].target.name
    record("faults", f"{name}_clean_run_bytes", sent)

    def trial(lane: Lane, index: int, rng: random.Random) -> None:
        assert lane.proxy is not None
        lane.use(f"t{index // 2:02d}")  # trials 2k and 2k+1 share a folder: an empty window, then a replaced one
        persistent = rng.random() < 0.5
        cuts = sorted(rng.sample(range(1, sent), 1 if persistent else rng.randint(1, 3)))
        before = lane.proxy.faults
        lane.proxy.reset_after(*cuts, persistent=persistent)
        outcome = lane.run()
        lane.proxy.disarm()
        settle(lane, outcome, f"cuts {cuts} of {sent} persistent={persistent}", lane.proxy.faults - before)

    in_lanes(lanes, TRIALS, trial)
    print("\n".join(line for lane in lanes for line in lane.log))


# --- b. the export process SIGKILLed at random times ----------------------------------------------------------

@pytest.mark.parametrize("lanes", ["local", "s3"], indirect=True)
def test_sigkill_at_random_times(lanes: list[Lane]) -> None:
    """`ajo-exports run` killed with SIGKILL (no cleanup of any kind) at a random time within a clean run's
    duration: the window is absent or complete, and the rerun of the same window delivers exactly once."""
    name = lanes[0].target.name
    duration = CLEAN[name][1] if name in CLEAN else clean_run(lanes[0]).seconds

    def trial(lane: Lane, index: int, rng: random.Random) -> None:
        lane.use(f"k{index // 2:02d}")
        at = rng.uniform(0.5, duration)
        outcome = lane.run(kill_after=at)
        assert outcome.killed or outcome.code == 0, f"seed {SEED}: {outcome.tail}"
        settle(lane, outcome, f"SIGKILL at {at:.2f}s of {duration:.2f}s", int(outcome.killed), "kill_trials")

    in_lanes(lanes, KILL_TRIALS, trial)
    print("\n".join(line for lane in lanes for line in lane.log))


# --- c. transient faults are retried ---------------------------------------------------------------------------

@pytest.mark.parametrize("lane", ["s3", "gcs", "azure"], indirect=True)
def test_throttled_requests_are_retried(lane: Lane) -> None:
    """503 (S3's SlowDown, Azure's ServerBusy, GCS's JSON error) on the first K requests: retried with backoff,
    the export succeeds without a rerun."""
    assert lane.proxy is not None
    k = random.Random(f"{SEED}-{lane.target.name}-503").choice([2, 3])
    lane.use("throttled")
    lane.proxy.http_errors(k, status=503)
    outcome = lane.run()
    add("faults", "faults_injected", lane.proxy.faults)
    add("faults", f"{lane.target.name}_503_answered", lane.proxy.faults)
    assert outcome.code == 0, f"seed {SEED}: {k} x 503 were not retried: {outcome.tail}"
    assert lane.proxy.faults == k, (lane.proxy.faults, k)
    for slug in DATASETS:
        exactly_once(lane, slug)


@pytest.mark.parametrize("lane", ["s3", "azure", "gcs", "sftp"], indirect=True)
def test_stalled_connection_resumes(lane: Lane) -> None:
    """A connection that stops moving mid-export for 3 s and then resumes: the export waits it out (every
    client's timeout is longer) and succeeds within a bounded time, with the window complete."""
    if lane.target.name not in CLEAN:
        measure(lane)
    sent, clean_seconds = CLEAN[lane.target.name]
    cut = random.Random(f"{SEED}-{lane.target.name}-stall").randrange(1, sent * 9 // 10)
    assert lane.proxy is not None
    proxy = lane.proxy
    lane.use("stalled")
    proxy.stall_after(cut)
    done = threading.Event()

    def release() -> None:  # 3 s after the stall begins (the run spends its first seconds starting up)
        while proxy.faults == 0 and not done.wait(0.05):
            pass
        if not done.wait(3.0):
            proxy.disarm()

    watcher = threading.Thread(target=release, daemon=True)
    watcher.start()
    outcome = lane.run()
    done.set()
    watcher.join()
    proxy.disarm()
    add("faults", "faults_injected", proxy.faults)
    add("faults", "stalls", 1)
    assert outcome.code == 0, f"seed {SEED}: stalled at byte {cut}: {outcome.tail}"
    assert proxy.faults > 0, f"seed {SEED}: the run never reached byte {cut}"
    assert outcome.seconds < clean_seconds + 30, (outcome.seconds, clean_seconds)
    for slug in DATASETS:
        exactly_once(lane, slug)


# --- d. terminal faults fail fast, naming what to fix ----------------------------------------------------------

TERMINAL = [
    pytest.param("reader", False, ("s3:PutObject", "permission denied"), id="read-only-key"),
    pytest.param("writer", True, ("the bucket does not exist",), id="missing-bucket"),
    pytest.param("bad-secret", False, ("the secret key does not match",), id="wrong-secret"),
]


@pytest.mark.parametrize("lane", ["s3"], indirect=True)
@pytest.mark.parametrize(("keys", "missing_bucket", "needles"), TERMINAL)
def test_terminal_faults_fail_fast(lane: Lane, s3_server: MotoServer, keys: str, missing_bucket: bool,
                                   needles: tuple[str, ...]) -> None:
    """A refusal no retry can fix ends the run within 10 s (no backoff spent on it), in one line naming it."""
    assert s3_server.reader is not None and s3_server.writer is not None
    lane.use("terminal", **({"bucket": f"ajo-missing-{uuid.uuid4().hex[:12]}"} if missing_bucket else {}))
    env = {"reader": {KEY_ENV: s3_server.reader.access_key_id, SECRET_ENV: s3_server.reader.secret_access_key},
           "writer": {},
           "bad-secret": {SECRET_ENV: "not-the-secret-" + uuid.uuid4().hex}}[keys]
    assert lane.proxy is not None
    lane.proxy.disarm()
    outcome = lane.run(env=env)
    ended = time.monotonic()
    add("faults", "terminal_cases")
    lines = [line for line in outcome.err.splitlines() if line.strip()]
    assert outcome.code != 0 and "Traceback" not in outcome.err, outcome.tail
    assert len(lines) == 1 and all(needle in lines[0] for needle in needles), outcome.err
    assert lane.proxy.first_connection is not None, "the run never reached the destination"
    refused_in = ended - lane.proxy.first_connection  # what the refusal costs, without Python's start-up
    record("faults", f"terminal_{keys}{'_missing_bucket' if missing_bucket else ''}_seconds",
           {"run": round(outcome.seconds, 1), "from_first_request": round(refused_in, 1)})
    assert refused_in < 10, f"a terminal refusal took {refused_in:.1f}s after the first request"
    assert outcome.seconds < 20, f"the run took {outcome.seconds:.1f}s"



def test_zz_record_figures() -> None:
    """The totals the README quotes; the counters above add up per trial."""
    record("faults", "seed", SEED)
    record("faults", "trials_per_destination", TRIALS)
    record("faults", "kill_trials_per_destination", KILL_TRIALS)
    record("faults", "recorded_at", time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
