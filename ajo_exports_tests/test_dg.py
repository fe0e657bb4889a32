"""Dagster's current CLI, `dg`, loads the same definitions as `dagster dev -w workspace.yaml` ([tool.dg])."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DG = Path(sys.executable).parent / "dg"


def dg(*args: str, home: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "VIRTUAL_ENV": str(Path(sys.executable).parent.parent), "DAGSTER_DISABLE_TELEMETRY": "1",
           "DAGSTER_HOME": str(home), "AJO_EXPORTS_HOME": str(home)}
    return subprocess.run([str(DG), *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


def test_dg_check_defs_and_list_defs(tmp_path: Path) -> None:
    assert DG.exists(), "dagster-dg-cli is not installed: `make install`"
    checked = dg("check", "defs", home=tmp_path)
    assert checked.returncode == 0 and "All definitions loaded successfully." in checked.stdout, checked.stderr
    listed = dg("list", "defs", "--json", home=tmp_path)
    assert listed.returncode == 0, listed.stderr
    keys = {asset["asset_key"] for asset in json.loads(listed.stdout)["assets"]}
    assert len([k for k in keys if k.startswith("aep/")]) == 21
    assert len([k for k in keys if k.startswith("export/demo/")]) == 21 and "ajo/license_usage" in keys
