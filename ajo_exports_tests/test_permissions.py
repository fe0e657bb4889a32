"""Access control (§8): each command needs its AEP permission when exports.yaml has an `access:` section."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

from ajo_exports.cli import main

FEEDBACK = "ajo_message_feedback_event_dataset"
VD, VDEST = "view_datasets", "view_destinations"
MANAGE, ACTIVATE = "manage_destinations", "manage_and_activate_dataset_destinations"

ACCESS = {
    "viewer": [VD, VDEST],
    "operator": [VD, VDEST, MANAGE, ACTIVATE],
    "auditor": [VD],
}
# command -> (argv, permissions it needs in the order the CLI checks them)
COMMANDS: dict[str, tuple[list[str], list[str]]] = {
    "datasets": (["datasets"], [VD]),
    "destinations": (["destinations"], [VDEST]),
    "review": (["review"], [VDEST, VD]),
    "check-connection": (["check-connection", "local"], [MANAGE]),
    "activate": (["activate", "demo"], [ACTIVATE]),
    "run": (["run"], [ACTIVATE]),
    "verify": (["verify"], [VDEST]),
}
NEEDS_LAKE = {"run", "verify"}  # allowed runs of these need a lake and Dagster: see test_allowed_run_and_verify


def write_config(tmp_path: Path, *, access: dict | None) -> Path:
    config = {
        "destinations": [{"name": "local", "type": "local", "path": str(tmp_path / "exports")}],
        "dataflows": [{"name": "demo", "destination": "local", "datasets": [FEEDBACK]}],
    }
    if access is not None:
        config["access"] = access
    path = tmp_path / "exports.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test: a fresh AJO_EXPORTS_HOME, a config with the access section, no ambient principal."""
    home = tmp_path / "home"
    monkeypatch.setenv("AJO_EXPORTS_HOME", str(home))
    monkeypatch.setenv("AJO_EXPORTS_CONFIG", str(write_config(tmp_path, access=ACCESS)))
    monkeypatch.setenv("DAGSTER_HOME", str(home / "dagster"))
    monkeypatch.delenv("AJO_EXPORTS_PRINCIPAL", raising=False)
    return home


def run_cli(capsys: pytest.CaptureFixture, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_error(code: int, err: str, *needles: str) -> str:
    assert code == 2, err
    lines = [line for line in err.splitlines() if line.startswith("ajo-exports: error:")]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def confirmed(home: Path) -> dict:
    path = home / "confirmations.json"
    return json.loads(path.read_text()) if path.exists() else {}


# (principal, command) -> the permission it lacks, None when allowed: written out, not derived from COMMANDS.
EXPECTED: dict[tuple[str, str], str | None] = {
    ("viewer", "datasets"): None, ("viewer", "destinations"): None, ("viewer", "review"): None,
    ("viewer", "check-connection"): MANAGE, ("viewer", "activate"): ACTIVATE, ("viewer", "run"): ACTIVATE,
    ("viewer", "verify"): None,
    ("operator", "datasets"): None, ("operator", "destinations"): None, ("operator", "review"): None,
    ("operator", "check-connection"): None, ("operator", "activate"): None, ("operator", "run"): None,
    ("operator", "verify"): None,
    ("auditor", "datasets"): None, ("auditor", "destinations"): VDEST, ("auditor", "review"): VDEST,
    ("auditor", "check-connection"): MANAGE, ("auditor", "activate"): ACTIVATE, ("auditor", "run"): ACTIVATE,
    ("auditor", "verify"): VDEST,
}
MATRIX = [
    pytest.param(who, command, missing, id=f"{who}-{command}")
    for (who, command), missing in EXPECTED.items()
    if missing is not None or command not in NEEDS_LAKE
]


def test_expected_matrix_agrees_with_the_permission_table() -> None:
    assert set(EXPECTED) == {(who, command) for who in ACCESS for command in COMMANDS}
    for (who, command), missing in EXPECTED.items():
        needs = COMMANDS[command][1]
        assert missing == next((p for p in needs if p not in ACCESS[who]), None), (who, command)


@pytest.mark.parametrize(("who", "command", "missing"), MATRIX)
def test_permission_matrix(env: Path, tmp_path: Path, capsys, who: str, command: str, missing: str | None) -> None:
    argv, _ = COMMANDS[command]
    code, out, err = run_cli(capsys, "--as", who, *argv)
    if missing is None:
        assert code == 0, err
        assert "ajo-exports: error:" not in err
    else:
        assert_one_line_error(code, err, f"principal '{who}'", f"permission {missing}", f"`{command}`")
        assert out == ""
        assert not (tmp_path / "exports").exists(), "a refused command must not touch the destination"
        assert confirmed(env) == {}, "a refused command must not confirm a dataflow"


def test_allowed_commands_do_their_work(env: Path, tmp_path: Path, capsys) -> None:
    code, out, _ = run_cli(capsys, "--as", "operator", "check-connection", "local")
    assert code == 0 and "accepts writes, lists and deletes" in out
    code, out, _ = run_cli(capsys, "--as", "operator", "activate", "demo")
    assert code == 0 and "confirmed by operator" in out
    assert confirmed(env)["demo"]["principal"] == "operator"
    code, out, _ = run_cli(capsys, "--as", "viewer", "review")
    assert code == 0 and "Dataflow       demo" in out and FEEDBACK in out
    code, out, _ = run_cli(capsys, "--as", "auditor", "datasets")
    assert code == 0 and FEEDBACK in out


def test_allowed_run_and_verify(env: Path, lake_root: Path, capsys) -> None:
    shutil.copytree(lake_root, env / "lake")
    code, out, err = run_cli(capsys, "--as", "viewer", "run")
    assert_one_line_error(code, err, "principal 'viewer'", f"permission {ACTIVATE}", "`run`")
    assert not (env.parent / "exports").exists()
    code, out, err = run_cli(capsys, "--as", "operator", "run")
    assert code == 0, err
    assert next(line for line in out.splitlines() if line.startswith(FEEDBACK)).split()[-1] == "passed"
    code, out, err = run_cli(capsys, "--as", "viewer", "verify")
    assert code == 0, err
    assert "passed" in out
    code, _, err = run_cli(capsys, "--as", "auditor", "verify")
    assert_one_line_error(code, err, "principal 'auditor'", f"permission {VDEST}", "`verify`")


@pytest.mark.parametrize("command", list(COMMANDS))
def test_no_principal_with_access_on_is_refused(env: Path, tmp_path: Path, capsys, command: str) -> None:
    argv, _ = COMMANDS[command]
    code, out, err = run_cli(capsys, *argv)
    assert_one_line_error(code, err, str(tmp_path / "exports.yaml"), "access control is on", "--as",
                          "AJO_EXPORTS_PRINCIPAL")
    assert out == ""


def test_unknown_principal_is_refused(env: Path, capsys) -> None:
    code, _, err = run_cli(capsys, "--as", "mallory", "datasets")
    assert_one_line_error(code, err, "principal 'mallory'", f"permission {VD}")


def test_principal_from_environment_works_like_as(env: Path, tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.setenv("AJO_EXPORTS_PRINCIPAL", "viewer")
    code, _, err = run_cli(capsys, "destinations")
    assert code == 0, err
    code, _, err = run_cli(capsys, "check-connection", "local")
    assert_one_line_error(code, err, "principal 'viewer'", f"permission {MANAGE}", "`check-connection`")
    monkeypatch.setenv("AJO_EXPORTS_PRINCIPAL", "operator")
    code, out, err = run_cli(capsys, "activate", "demo")
    assert code == 0, err
    assert confirmed(env)["demo"]["principal"] == "operator"


def test_as_overrides_the_environment(env: Path, monkeypatch, capsys) -> None:
    monkeypatch.setenv("AJO_EXPORTS_PRINCIPAL", "operator")
    code, _, err = run_cli(capsys, "--as", "auditor", "destinations")
    assert_one_line_error(code, err, "principal 'auditor'", f"permission {VDEST}")
    monkeypatch.setenv("AJO_EXPORTS_PRINCIPAL", "auditor")
    code, _, err = run_cli(capsys, "--as", "operator", "destinations")
    assert code == 0, err


@pytest.mark.parametrize("principal", [None, "anyone"])
@pytest.mark.parametrize("command", [c for c in COMMANDS if c not in NEEDS_LAKE])
def test_without_access_section_everything_is_allowed(
    env: Path, tmp_path: Path, monkeypatch, capsys, command: str, principal: str | None
) -> None:
    monkeypatch.setenv("AJO_EXPORTS_CONFIG", str(write_config(tmp_path, access=None)))
    argv, _ = COMMANDS[command]
    code, _, err = run_cli(capsys, *(["--as", principal] if principal else []), *argv)
    assert code == 0, err
    assert "ajo-exports: error:" not in err
