"""Review and confirm: a dataflow runs on schedule only as it was confirmed (who, when, a hash of its config).

AEP's last wizard step is "review, then confirm". Here `ajo-exports activate` records the confirmation; editing
the dataflow, its destination or the organisation afterwards changes the hash, and the schedule skips with the
reason until someone confirms again.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

from ajo_exports.config import Dataflow, ExportsConfig


@dataclass(frozen=True)
class Confirmation:
    dataflow: str
    principal: str
    confirmed_at: str
    config_hash: str


def dataflow_hash(config: ExportsConfig, flow: Dataflow) -> str:
    """What was reviewed: the dataflow, its destination (secret references, not values) and the organisation."""
    reviewed = {
        "dataflow": flow.model_dump(mode="json"),
        "destination": config.destination(flow.destination).model_dump(mode="json"),
        "organization": config.organization.model_dump(mode="json"),
        "datasets": [d.slug for d in config.datasets_of(flow)],
    }
    return hashlib.sha256(json.dumps(reviewed, sort_keys=True).encode()).hexdigest()


class Confirmations:
    """Confirmations kept beside the lake and the Dagster instance, in `<AJO_EXPORTS_HOME>/confirmations.json`."""

    def __init__(self, home: Path):
        self.path = home / "confirmations.json"

    def _read(self) -> dict[str, dict]:
        return json.loads(self.path.read_text()) if self.path.exists() else {}

    def get(self, dataflow: str) -> Confirmation | None:
        entry = self._read().get(dataflow)
        return Confirmation(**entry) if entry else None

    def record(
        self, config: ExportsConfig, flow: Dataflow, principal: str, now: datetime | None = None
    ) -> Confirmation:
        confirmation = Confirmation(
            flow.name, principal, (now or datetime.now(UTC)).isoformat(), dataflow_hash(config, flow)
        )
        entries = self._read()
        entries[flow.name] = asdict(confirmation)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        temporary = self.path.with_suffix(".tmp")
        temporary.write_text(json.dumps(entries, indent=2))
        os.replace(temporary, self.path)
        return confirmation

    def status(self, config: ExportsConfig, flow: Dataflow) -> tuple[bool, str]:
        """(may run on schedule, why) for a dataflow as configured now."""
        confirmation = self.get(flow.name)
        if confirmation is None:
            return False, f"dataflow {flow.name!r} has not been confirmed: run `ajo-exports activate {flow.name}`"
        if confirmation.config_hash != dataflow_hash(config, flow):
            return False, (
                f"dataflow {flow.name!r} changed after {confirmation.principal} confirmed it at "
                f"{confirmation.confirmed_at}: review it and run `ajo-exports activate {flow.name}` again"
            )
        return True, f"confirmed by {confirmation.principal} at {confirmation.confirmed_at}"
