"""A real `dagster dev` (webserver + daemon) on 127.0.0.1 over a seeded sample lake, for the UI and GraphQL tests.

The session fixture `dagster_web` builds a throwaway AJO_EXPORTS_HOME (a copy of the session lake, an exports.yaml
with one local destination and two dataflows: `adhoc`, exported once, and `daily`, partitioned by day), a fresh
DAGSTER_HOME with the repo's dagster.yaml, starts `dagster dev` in its own process group, waits for the code
location to load, and at the end stops the whole group (SIGINT, then SIGKILL) and asserts nothing survived.
The server also holds the keys of the session's moto S3 server in `S3_KEY_ENV`/`S3_SECRET_ENV`, so a test can add an
S3 destination that reads them (`${VAR}`), reload the code location and run real secret-bearing exports through it
(test_zz_no_secret_leaks.py does, then searches the GraphQL answers for the secret).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

from ajo_exports_tests.servers import free_port
from ajo_exports_tests.servers.s3 import MotoServer

REPO = Path(__file__).resolve().parents[2]
FEEDBACK = "ajo_message_feedback_event_dataset"
JOURNEYS = "journeys"
DECISIONS = "decision_object_repository_activities"
ADHOC_DATASETS = [FEEDBACK, JOURNEYS, DECISIONS]
DAILY_DATASETS = [JOURNEYS, FEEDBACK]
DAILY_SCHEDULE = {"frequency": "daily", "start": "2026-11-01T02:00:00Z", "end": "2027-05-01T00:00:00Z"}
REPOSITORY = "__repository__"
START_TIMEOUT = 120.0
STOP_TIMEOUT = 30.0
FINISHED = {"SUCCESS", "FAILURE", "CANCELED"}
S3_KEY_ENV, S3_SECRET_ENV = "AJO_WEB_S3_ACCESS_KEY_ID", "AJO_WEB_S3_SECRET_ACCESS_KEY"


def exports_yaml(exports: Path) -> str:
    return yaml.safe_dump({
        "organization": {"name": "acme", "sandbox": "prod", "product_tier": "ultimate"},
        "destinations": [{"name": "local", "type": "local", "path": str(exports)}],
        "dataflows": [
            {"name": "adhoc", "destination": "local", "datasets": ADHOC_DATASETS, "schedule": {"frequency": "once"}},
            {"name": "daily", "destination": "local", "datasets": DAILY_DATASETS, "schedule": DAILY_SCHEDULE},
        ],
    }, sort_keys=False)


class GraphQLError(AssertionError):
    pass


def _group_members(pgid: int) -> list[int]:
    """Live (non-zombie) processes whose process group is `pgid`."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        state, pgrp = fields[0], int(fields[2])
        if pgrp == pgid and state not in ("Z", "X"):
            found.append(int(entry.name))
    return found


@dataclass
class DagsterWeb:
    """A running `dagster dev`: its URL, the home it exports from and to, and a GraphQL client."""

    home: Path
    port: int
    log_path: Path
    process: subprocess.Popen | None = None
    location: str = ""
    # Set in the server's environment at start; kept out of repr, which pytest prints in a failing test's traceback.
    secrets_env: dict[str, str] = field(default_factory=dict, repr=False)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def lake(self) -> Path:
        return self.home / "lake"

    @property
    def exports(self) -> Path:
        return self.home / "exports"

    @property
    def dagster_home(self) -> Path:
        return self.home / "dagster"

    @property
    def config_path(self) -> Path:
        return self.home / "exports.yaml"

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k.lower() not in ("http_proxy", "https_proxy", "all_proxy")}
        env.update({
            "AJO_EXPORTS_HOME": str(self.home),
            "AJO_EXPORTS_CONFIG": str(self.config_path),
            "DAGSTER_HOME": str(self.dagster_home),
            "DAGSTER_DISABLE_TELEMETRY": "1",
            "AWS_EC2_METADATA_DISABLED": "true",
            "NO_GCE_CHECK": "true",
            "NO_PROXY": "127.0.0.1,localhost",
            "no_proxy": "127.0.0.1,localhost",
            **self.secrets_env,
        })
        return env

    def log_tail(self, chars: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return "(no log)"

    # --- HTTP / GraphQL ---------------------------------------------------------------------------------------

    def get(self, path: str, timeout: float = 10.0) -> tuple[int, bytes]:
        with urllib.request.urlopen(self.url + path, timeout=timeout) as response:  # noqa: S310 - 127.0.0.1
            return response.status, response.read()

    def graphql(self, query: str, variables: dict | None = None, timeout: float = 60.0) -> dict:
        """POST a query to /graphql; return its `data`, failing with the errors (and the log tail) if any."""
        body = json.dumps({"query": query, "variables": variables or {}}).encode()
        request = urllib.request.Request(
            self.url + "/graphql", data=body, headers={"Content-Type": "application/json"}, method="POST"
        )
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310 - 127.0.0.1
                payload = json.loads(response.read())
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode(errors="replace")[:2000]
            raise GraphQLError(f"GraphQL HTTP {exc.code}: {detail}\n--- dagster log ---\n{self.log_tail()}") from None
        if payload.get("errors"):
            raise GraphQLError(f"GraphQL errors: {json.dumps(payload['errors'], indent=1)[:3000]}")
        return payload["data"]

    def selector(self, job: str) -> dict:
        return {"repositoryLocationName": self.location, "repositoryName": REPOSITORY, "jobName": job}

    def launch_run(self, job: str, *, asset_keys: list[list[str]] | None = None,
                   check_keys: list[tuple[list[str], str]] | None = None, tags: dict[str, str] | None = None) -> str:
        """launchRun of an asset job (optionally a subset of its assets and checks); return the run id."""
        selector: dict = self.selector(job)
        if asset_keys is not None:
            selector["assetSelection"] = [{"path": key} for key in asset_keys]
        if check_keys is not None:
            selector["assetCheckSelection"] = [{"assetKey": {"path": key}, "name": name} for key, name in check_keys]
        params = {
            "selector": selector,
            "runConfigData": {},
            "mode": "default",
            "executionMetadata": {"tags": [{"key": k, "value": v} for k, v in (tags or {}).items()]},
        }
        data = self.graphql(LAUNCH_RUN, {"executionParams": params})["launchRun"]
        if data["__typename"] != "LaunchRunSuccess":
            raise GraphQLError(f"launchRun answered {data['__typename']}: {json.dumps(data)[:3000]}")
        return data["run"]["runId"]

    def wait_for_run(self, run_id: str, timeout: float = 180.0) -> str:
        """Poll the run's status until it finishes; return SUCCESS, FAILURE or CANCELED."""
        deadline = time.monotonic() + timeout
        status = "?"
        while time.monotonic() < deadline:
            run = self.graphql(RUN_STATUS, {"runId": run_id})["runOrError"]
            if run["__typename"] != "Run":
                raise GraphQLError(f"runOrError({run_id}) answered {json.dumps(run)[:2000]}")
            status = run["status"]
            if status in FINISHED:
                return status
            time.sleep(0.5)
        raise AssertionError(
            f"run {run_id} still {status} after {timeout:.0f}s\n--- dagster log ---\n{self.log_tail()}"
        )

    def run_failure(self, run_id: str) -> str:
        """The error events of a run, to attach to a failed assertion."""
        data = self.graphql(RUN_ERRORS, {"runId": run_id})["logsForRun"]
        events = data.get("events", []) if isinstance(data, dict) else []
        messages = [
            f"{e['__typename']}: {e.get('message', '')} {(e.get('error') or {}).get('message', '')}".strip()
            for e in events if "Failure" in e["__typename"] or e.get("error")
        ]
        return "\n".join(messages) or json.dumps(data)[:3000]

    def assert_success(self, run_id: str, timeout: float = 180.0) -> None:
        status = self.wait_for_run(run_id, timeout)
        if status != "SUCCESS":
            raise AssertionError(
                f"run {run_id} ended {status}:\n{self.run_failure(run_id)}\n--- dagster log ---\n{self.log_tail()}"
            )

    # --- process ----------------------------------------------------------------------------------------------

    def start(self, timeout: float = START_TIMEOUT) -> None:
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "dagster", "dev", "-w", str(REPO / "workspace.yaml"),
             "-h", "127.0.0.1", "-p", str(self.port)],
            cwd=REPO, env=self.env(), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        log.close()
        deadline = time.monotonic() + timeout
        problem = "the webserver did not answer /server_info"
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                problem = f"dagster dev exited with {self.process.returncode}"
                break
            try:
                status, _ = self.get("/server_info", timeout=2)
            except OSError:
                time.sleep(0.5)
                continue
            if status == 200:
                problem = self._location_problem()
                if problem is None:
                    return
                if problem.startswith("code location failed"):
                    break
            time.sleep(0.5)
        else:
            problem = f"not ready within {timeout:.0f}s: {problem}"
        tail = self.log_tail()
        self.stop()
        pytest.fail(f"dagster dev: {problem}\n--- log {self.log_path} ---\n{tail}", pytrace=False)

    def reload_location(self, timeout: float = START_TIMEOUT) -> None:
        """Reload the code location (after a test changed exports.yaml), as the UI's Reload button does."""
        answer = self.graphql(RELOAD, {"name": self.location})["reloadRepositoryLocation"]
        if answer["__typename"] != "WorkspaceLocationEntry":
            raise GraphQLError(f"reloadRepositoryLocation answered {json.dumps(answer)[:2000]}")
        deadline = time.monotonic() + timeout
        while (problem := self._location_problem()) is not None:
            if problem.startswith("code location failed") or time.monotonic() > deadline:
                raise GraphQLError(f"after a reload: {problem}\n--- dagster log ---\n{self.log_tail()}")
            time.sleep(0.5)

    def _location_problem(self) -> str | None:
        """None once the one code location has LOADED (and remember its name); else what is missing."""
        try:
            data = self.graphql(WORKSPACE, timeout=10)["workspaceOrError"]
        except (OSError, GraphQLError) as exc:
            return f"workspace query failed: {exc}"
        entries = data.get("locationEntries") or []
        if not entries:
            return f"no code location yet: {json.dumps(data)[:500]}"
        (entry,) = entries
        loaded = entry["locationOrLoadError"] or {}
        if loaded.get("__typename") == "PythonError":
            causes = [c["message"].strip() for c in loaded.get("causes") or []]
            return "code location failed to load: " + " <- ".join([loaded["message"].strip(), *causes])
        if entry["loadStatus"] != "LOADED" or loaded.get("__typename") != "RepositoryLocation":
            return f"code location {entry['name']} is {entry['loadStatus']}"
        self.location = entry["name"]
        return None

    def stop(self) -> None:
        """SIGINT the whole process group, SIGKILL it after STOP_TIMEOUT, and assert nothing of it survives."""
        if self.process is None:
            return
        pgid = self.process.pid  # start_new_session: the group is led by dagster dev
        try:
            os.killpg(pgid, signal.SIGINT)
        except ProcessLookupError:
            pass
        deadline = time.monotonic() + STOP_TIMEOUT
        while time.monotonic() < deadline and (self.process.poll() is None or _group_members(pgid)):
            time.sleep(0.2)
        if self.process.poll() is None or _group_members(pgid):
            try:
                os.killpg(pgid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.process.wait(timeout=10)
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and _group_members(pgid):
                time.sleep(0.2)
        survivors = _group_members(pgid)
        self.process = None
        assert not survivors, f"processes of dagster dev's group {pgid} survived SIGKILL: {survivors}"


def build_home(home: Path, lake_root: Path) -> None:
    shutil.copytree(lake_root, home / "lake")
    (home / "exports").mkdir()
    (home / "exports.yaml").write_text(exports_yaml(home / "exports"))
    (home / "dagster").mkdir()
    shutil.copy(REPO / "dagster.yaml", home / "dagster" / "dagster.yaml")


class _Shared:
    """Test modules import the fixture by name, so pytest registers one session fixture per importing module: they
    share one server (started by the first to run, stopped by the last at the end of the session)."""

    web: DagsterWeb | None = None
    users = 0


@pytest.fixture(scope="session")
def dagster_web(
    tmp_path_factory: pytest.TempPathFactory, lake_root: Path, s3_server: MotoServer
) -> Iterator[DagsterWeb]:
    """`dagster dev` (webserver and daemon) serving this repo's definitions over a copy of the sample lake."""
    if _Shared.web is None:
        home = tmp_path_factory.mktemp("dagster-web")
        build_home(home, lake_root)
        assert s3_server.writer is not None
        web = DagsterWeb(
            home=home, port=free_port(), log_path=home / "dagster-dev.log",
            secrets_env={S3_KEY_ENV: s3_server.writer.access_key_id, S3_SECRET_ENV: s3_server.writer.secret_access_key},
        )
        web.start()
        _Shared.web = web
    _Shared.users += 1
    try:
        yield _Shared.web
    finally:
        _Shared.users -= 1
        if not _Shared.users:
            web, _Shared.web = _Shared.web, None
            web.stop()


WORKSPACE = """
query Workspace {
  workspaceOrError {
    __typename
    ... on Workspace {
      locationEntries {
        name
        loadStatus
        locationOrLoadError {
          __typename
          ... on RepositoryLocation { name repositories { name } }
          ... on PythonError { message causes { message } }
        }
      }
    }
    ... on PythonError { message }
  }
}
"""

LAUNCH_RUN = """
mutation Launch($executionParams: ExecutionParams!) {
  launchRun(executionParams: $executionParams) {
    __typename
    ... on LaunchRunSuccess { run { runId status } }
    ... on PythonError { message stack }
    ... on InvalidSubsetError { message }
    ... on RunConfigValidationInvalid { errors { message } }
    ... on Error { message }
  }
}
"""

RELOAD = """
mutation Reload($name: String!) {
  reloadRepositoryLocation(repositoryLocationName: $name) {
    __typename
    ... on WorkspaceLocationEntry { name loadStatus }
    ... on Error { message }
  }
}
"""

RUN_STATUS = """
query RunStatus($runId: ID!) {
  runOrError(runId: $runId) {
    __typename
    ... on Run { runId status }
    ... on Error { message }
  }
}
"""

RUN_ERRORS = """
query RunErrors($runId: ID!) {
  logsForRun(runId: $runId) {
    __typename
    ... on EventConnection {
      events {
        __typename
        ... on MessageEvent { message }
        ... on ExecutionStepFailureEvent { error { message } }
        ... on RunFailureEvent { pipelineName }
      }
    }
    ... on Error { message }
  }
}
"""
