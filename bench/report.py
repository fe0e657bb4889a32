"""Summaries of the raw results: a printed table, bench/results/latest.json and bench/RESULTS.md.

Every figure is the median over reps (peak RSS: the maximum). Ratios are paired: computed within each rep
against the reference case of the same group and rep, then the median of those ratios is reported.
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any

from bench.cases import Result

COLUMNS = [
    ("group", "group"),
    ("case", "case"),
    ("rows", "rows"),
    ("mb", "MB out"),
    ("seconds", "s"),
    ("wall_s", "wall s"),
    ("mb_s", "MB/s"),
    ("rows_s", "rows/s"),
    ("peak_rss_mib", "peak RSS MiB"),
    ("cpu_s", "CPU s"),
    ("server_cpu_s", "server CPU s"),
    ("ratio", "× ref"),
    ("dlt_ajo", "dlt/ajo"),
]


def _median(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def summarize(results: list[Result]) -> list[dict[str, Any]]:
    """One row per (group, case), in the order the cases first ran."""
    keyed: dict[tuple[str, str], list[Result]] = {}
    for result in results:
        keyed.setdefault((result.group, result.case), []).append(result)
    index = {(r.group, r.case, r.rep): r for r in results}
    rows = []
    for (group, case), runs in keyed.items():
        seconds = _median([r.seconds for r in runs])
        size = _median([r.bytes for r in runs])
        count = runs[0].rows
        ratios = [
            r.seconds / ref.seconds
            for r in runs
            if r.reference and (ref := index.get((group, r.reference, r.rep))) and ref.seconds
        ]
        dlt_ajo = None
        if case.startswith("dlt "):
            paired = [
                r.seconds / ajo.seconds
                for r in runs
                if (ajo := index.get((group, "ajo " + case.removeprefix("dlt "), r.rep))) and ajo.seconds
            ]
            dlt_ajo = _median(paired)
        rows.append({
            "group": group,
            "case": case,
            "reps": len(runs),
            "rows": count,
            "bytes": size,
            "mb": size / 1e6 if size is not None else None,
            "seconds": seconds,
            "wall_s": _median([r.wall_s for r in runs]),
            "mb_s": size / 1e6 / seconds if size and seconds else None,
            "rows_s": count / seconds if count and seconds else None,
            "peak_rss_mib": max(r.peak_rss_mib for r in runs),
            "cpu_s": _median([r.cpu_s for r in runs]),
            "server_cpu_s": _median([r.server_cpu_s for r in runs]),
            "reference": runs[0].reference,
            "ratio": _median(ratios) if ratios else None,
            "dlt_ajo": dlt_ajo,
            "detail": _merge_details([r.detail for r in runs]),
        })
    return rows


def _merge_details(details: list[dict[str, Any]]) -> dict[str, Any]:
    """Numeric details as medians (encode_s, upload_s, dlt phases...), others from the first rep."""
    merged: dict[str, Any] = {}
    for key in details[0] if details else {}:
        values = [d.get(key) for d in details]
        if all(isinstance(v, int) and not isinstance(v, bool) for v in values):
            merged[key] = statistics.median_low(values)  # counts stay whole
        elif all(isinstance(v, int | float) and not isinstance(v, bool) for v in values):
            merged[key] = statistics.median(values)
        else:
            merged[key] = values[0]
    return merged


def _cell(key: str, value: Any) -> str:
    if value is None:
        return "-"
    if key in ("group", "case"):
        return str(value)
    if key == "rows":
        return f"{value:,}"
    if key == "rows_s":
        return f"{value:,.0f}"
    if key in ("ratio", "dlt_ajo"):
        return f"{value:.2f}"
    if key in ("peak_rss_mib",):
        return f"{value:,.0f}"
    if key == "mb":
        return f"{value:,.1f}"
    return f"{value:,.2f}" if value < 100 else f"{value:,.0f}"


def table(rows: list[dict[str, Any]]) -> str:
    """A plain-text table for the terminal."""
    cells = [[header for _, header in COLUMNS]] + [[_cell(k, row[k]) for k, _ in COLUMNS] for row in rows]
    widths = [max(len(line[i]) for line in cells) for i in range(len(COLUMNS))]
    lines = []
    for number, line in enumerate(cells):
        lines.append("  ".join(c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(line, widths,
                                                                                                  strict=True))))
        if number == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def markdown_table(rows: list[dict[str, Any]]) -> str:
    header = "| " + " | ".join(h for _, h in COLUMNS) + " |"
    rule = "|" + "|".join("---" if i < 2 else "---:" for i in range(len(COLUMNS))) + "|"
    body = ["| " + " | ".join(_cell(k, row[k]) for k, _ in COLUMNS) + " |" for row in rows]
    return "\n".join([header, rule, *body])


def write_json(path: Path, payload: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2, default=str) + "\n")


def write_markdown(path: Path, payload: dict[str, Any], rows: list[dict[str, Any]], notes: list[str]) -> None:
    machine = payload["machine"]
    text = [
        "# Benchmark results",
        "",
        f"`make bench` on {machine['date']}: {machine['nproc']} cores ({machine['cpu_model']}), "
        f"{machine['ram_gib']} GiB RAM, Linux {machine['kernel']}, Python {machine['python']}. "
        f"Whole run: {payload['elapsed_s'] / 60:.1f} min. Load average (1, 5, 15 min) at the start "
        f"{_load(payload['load_average']['start'])}, at the end {_load(payload['load_average']['end'])}: "
        "anything else running on the machine shows in the figures.",
        "",
        f"Command: `{payload['command']}`. Product: {payload['source']}.",
        "",
        "Columns: **s** is the case's own work (floor: encode + upload; ajo: the export's `seconds` from its "
        "materialization metadata; dlt: extract + normalize + load; otherwise the wall time); **wall s** the "
        "whole subprocess; **MB/s** and **rows/s** are over **s**; **peak RSS MiB** is the sampled peak of the "
        "whole process tree; **CPU s** is user + system of the tree; **server CPU s** what the server (moto, "
        "Azurite, the GCS emulator, sshd) spent meanwhile; **× ref** is the paired median ratio of **s** to the "
        "group's reference (the floor of the same format; `import dagster`; the once export); **dlt/ajo** the "
        "paired ratio of dlt's **s** to ajo-exports'. Medians over reps; peak RSS is the maximum.",
        "",
        markdown_table(rows),
        "",
        "## Where the time goes",
        "",
        *[f"- {line}" for line in phases(rows)],
        "",
        "## Notes",
        "",
        *[f"- {note}" for note in notes],
        "",
    ]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(text))


def _load(values: list[float] | tuple[float, ...]) -> str:
    return ", ".join(f"{v:.2f}" for v in values)


def phases(rows: list[dict[str, Any]]) -> list[str]:
    """Each case's split of its time, from the medians of its details."""
    lines = []
    for row in rows:
        d, where = row["detail"], f"{row['group']} / {row['case']}"
        if "encode_s" in d:
            lines.append(f"{where}: encode {d['encode_s']:.2f} s + upload {d['upload_s']:.2f} s")
        elif "extract_s" in d:
            lines.append(f"{where}: extract {d['extract_s']:.2f} s + normalize {d['normalize_s']:.2f} s + load "
                         f"{d['load_s']:.2f} s (gzip level {d['gzip_level']})")
        elif "run_id" in d:
            export = d.get("export_s", d.get("export_s_sum", row["seconds"]))
            lines.append(f"{where}: export {export:.2f} s of a {row['wall_s']:.2f} s `ajo-exports run` "
                         f"({d['exports']} export(s), {d['files']} file(s)); the rest is start-up, Dagster and the "
                         "delivery check")
    return lines
