"""Figures the robustness tests measure (trials, faults injected, bad inputs, leaks), collected for the README.

A test calls `record("faults", "s3_trials", 20)`; at the end of the session the figures are written to
`test-artifacts/figures.json` (merged with what an earlier session wrote there, so a partial run keeps the rest) and
printed as one table. The README's "Proof under faults" section quotes that file.
"""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

FIGURES: dict[str, dict[str, object]] = {}
_LOCK = threading.Lock()


def figures_path() -> Path:
    default = Path(__file__).resolve().parent.parent / "test-artifacts" / "figures.json"
    return Path(os.environ.get("AJO_TEST_FIGURES", default))


def record(section: str, name: str, value: object) -> None:
    """Set one figure (a number, string, list or dict that JSON can hold)."""
    with _LOCK:
        FIGURES.setdefault(section, {})[name] = value


def add(section: str, name: str, amount: int = 1) -> None:
    """Add to a counting figure."""
    with _LOCK:
        current = FIGURES.setdefault(section, {}).get(name, 0)
        FIGURES[section][name] = int(current) + amount  # type: ignore[arg-type]


def write() -> Path | None:
    if not FIGURES:
        return None
    path = figures_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    merged: dict[str, dict[str, object]] = {}
    if path.is_file():
        try:
            merged = json.loads(path.read_text())
        except ValueError:
            merged = {}
    for section, values in FIGURES.items():
        merged.setdefault(section, {}).update(values)
    path.write_text(json.dumps(merged, indent=2, sort_keys=True) + "\n")
    return path


def table() -> str:
    lines = []
    for section, values in sorted(FIGURES.items()):
        for name, value in sorted(values.items()):
            lines.append(f"{section:<12} {name:<40} {json.dumps(value)}")
    return "\n".join(lines)


START, END = "<!-- figures:start -->", "<!-- figures:end -->"


def readme_block(figures: dict[str, dict[str, object]]) -> str:
    """The README's figures, one table per section, from what the tests recorded."""
    out = [START, ""]
    for section, values in sorted(figures.items()):
        out += [f"**{section}**", "", "| figure | value |", "|---|---|"]
        out += [f"| {name} | {json.dumps(value)} |" for name, value in sorted(values.items())]
        out.append("")
    return "\n".join([*out, END])


def update_readme(readme: Path) -> None:
    """Replace the block between the figure markers with `test-artifacts/figures.json` (after `make test`)."""
    text = readme.read_text()
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    readme.write_text(head + readme_block(json.loads(figures_path().read_text())) + tail)


if __name__ == "__main__":
    update_readme(Path(__file__).resolve().parent.parent / "README.md")
