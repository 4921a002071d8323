"""The per-instance journal of a half-done operation.

Before the agent acts on a step it records the intent here (atomically), and
it removes the entry when the operation is over. On restart, every entry left
is a crashed operation: :mod:`hostagent.lifecycle.recovery` finishes or undoes it by
comparing the entry with what libvirt says the domain runs.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from kvmss.base import atomicfile

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Entry:
    operation: str  # operation id
    kind: str  # "create" | "reimage" | "rollback" | "commit" | "delete"
    instance: str
    step: str  # the last step recorded (its intent), see the managers
    was_running: bool = False
    # generation numbers and paths involved, depending on kind
    data: dict[str, Any] = field(default_factory=dict)

    def at(self, step: str, **data: Any) -> Entry:
        return replace(self, step=step, data={**self.data, **data})


class Journal:
    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def _path(self, instance: str) -> Path:
        return self.directory / f"{instance}.json"

    def record(self, entry: Entry) -> Entry:
        atomicfile.write_json(self._path(entry.instance), asdict(entry))
        log.debug("journal %s %s: %s", entry.kind, entry.instance, entry.step)
        return entry

    def get(self, instance: str) -> Entry | None:
        p = self._path(instance)
        if not p.exists():
            return None
        return Entry(**atomicfile.read_json(p))

    def clear(self, instance: str) -> None:
        self._path(instance).unlink(missing_ok=True)

    def pending(self) -> list[Entry]:
        out = []
        for p in sorted(self.directory.glob("*.json")):
            try:
                out.append(Entry(**atomicfile.read_json(p)))
            except (ValueError, TypeError) as e:
                log.error("unreadable journal entry %s: %s", p.name, e)
        return out
