"""Where an export lands: AEP's folder template macros, rendered per dataset and export window."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime

from ajo_exports.config import FOLDER_MACROS, MACRO

JAVA_TO_STRFTIME = (
    ("YYYY", "%Y"),
    ("yyyy", "%Y"),
    ("MM", "%m"),
    ("dd", "%d"),
    ("HH", "%H"),
    ("mm", "%M"),
    ("ss", "%S"),
)


@dataclass(frozen=True)
class LayoutContext:
    dataset_id: str
    export_time: datetime
    run_time: datetime
    sandbox: str
    organization: str
    destination_type: str
    destination_name: str
    destination_id: str


def _datetime(pattern: str | None, moment: datetime) -> str:
    fmt = pattern or "YYYYMMdd_HHmmss"
    for java, python in JAVA_TO_STRFTIME:
        fmt = fmt.replace(java, python)
    return moment.strftime(fmt)


def export_time_folder(export_time: datetime) -> str:
    return f"exportTime={export_time.strftime('%Y%m%d%H%M')}"


def render_folder(template: str, ctx: LayoutContext) -> str:
    """Render a folder template such as `%DATASET_ID%/%EXPORT_TIME%` into a key prefix (no leading '/')."""
    values = {
        "DATASET_ID": lambda _: ctx.dataset_id,
        "EXPORT_TIME": lambda _: export_time_folder(ctx.export_time),
        "DATETIME": lambda arg: _datetime(arg, ctx.run_time),
        "SANDBOX_NAME": lambda _: ctx.sandbox,
        "ORGANIZATION_NAME": lambda _: ctx.organization,
        "DESTINATION": lambda _: ctx.destination_type,
        "DESTINATION_INSTANCE_NAME": lambda _: ctx.destination_name,
        "DESTINATION_INSTANCE_ID": lambda _: ctx.destination_id,
    }

    assert set(values) == FOLDER_MACROS

    def substitute(match: re.Match[str]) -> str:
        macro, argument = match.group(1), match.group(2)
        if macro not in values:
            raise ValueError(f"unknown folder macro %{macro}% (known: {', '.join(sorted(values))})")
        return values[macro](argument)

    return "/".join(part for part in MACRO.sub(substitute, template).split("/") if part)
