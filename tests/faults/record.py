"""Figures of each fault scenario, kept as one JSON file per scenario.

A scenario calls ``record("controller-crash-before-reimage", instances=3, ...)``
when it finishes; ``python -m tests.faults.report`` turns every record into the
table of docs/reliability.md. Records live under build/reliability/ (not in
git): the document is the committed artefact, the records are its inputs.

Figures the report reads (all optional, anything else is kept as is):
instances, fault (or crash_point), outcome, out_of_service_max, batch_size,
data_disk_bytes_changed, duration_s. ``recorded_at`` is added.
"""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def records_dir() -> Path:
    """Where records are written; KVMSS_RELIABILITY_DIR overrides (tests of the report)."""
    override = os.environ.get("KVMSS_RELIABILITY_DIR")
    return Path(override) if override else ROOT / "build" / "reliability"


def record(scenario: str, **figures: object) -> None:
    """Write build/reliability/<scenario>.json atomically (last run of a scenario wins)."""
    if not scenario or "/" in scenario or scenario.startswith("."):
        raise ValueError(f"bad scenario id {scenario!r}")
    directory = records_dir()
    directory.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    body = {"scenario": scenario, "recorded_at": stamp, **figures}
    target = directory / f"{scenario}.json"
    part = target.with_suffix(".json.part")
    part.write_text(json.dumps(body, indent=2, sort_keys=True, default=str) + "\n")
    os.replace(part, target)


def load_all() -> dict[str, dict[str, object]]:
    """Every record, keyed by scenario id, in id order."""
    directory = records_dir()
    if not directory.is_dir():
        return {}
    found: dict[str, dict[str, object]] = {}
    for path in sorted(directory.glob("*.json")):
        body = json.loads(path.read_text())
        if isinstance(body, dict):
            found[str(body.get("scenario", path.stem))] = body
    return found
