"""What guests report about themselves: extension statuses and application
health, kept per cloud-init instance-id so a rollback brings back the
reports of the generation it returns to."""

from __future__ import annotations

import base64
import binascii
import threading
from pathlib import Path
from typing import Any

from hostagent.contract import reports, views
from kvmss.base import atomicfile
from kvmss.base.clock import Clock, iso8601

MESSAGE_LIMIT = 4096


class ReportStore:
    def __init__(self, path_for: Any, clock: Clock) -> None:
        self._path_for = path_for  # Callable[[str], Path]
        self._clock = clock
        self._lock = threading.Lock()

    def _load(self, instance: str) -> dict[str, Any]:
        p: Path = self._path_for(instance)
        if not p.exists():
            return {"expected": {}, "extensions": {}, "health": {}}
        data: dict[str, Any] = atomicfile.read_json(p)
        return data

    def _save(self, instance: str, data: dict[str, Any]) -> None:
        atomicfile.write_json(self._path_for(instance), data)

    def expect(self, instance: str, instance_id: str, extensions: list[str]) -> None:
        """Record which extensions the seed of ``instance_id`` carries, in order."""
        with self._lock:
            data = self._load(instance)
            data["expected"][instance_id] = extensions
            self._save(instance, data)

    def prune(self, instance: str, keep: set[str]) -> None:
        with self._lock:
            data = self._load(instance)
            for section in ("expected", "extensions", "health"):
                data[section] = {k: v for k, v in data[section].items() if k in keep}
            self._save(instance, data)

    def record_extension(self, instance: str, name: str, report: reports.ExtensionReport) -> None:
        message = None
        if report.outputBase64:
            try:
                raw = base64.b64decode(report.outputBase64, validate=True)
            except (binascii.Error, ValueError):
                raise ValueError("outputBase64: not valid base64") from None
            message = raw[-MESSAGE_LIMIT:].decode("utf-8", "replace")
        status = views.ExtensionStatus(
            name=name,
            status=report.status,
            exitCode=report.exitCode,
            message=message,
            instanceId=report.instanceId,
            time=iso8601(self._clock.now()),
        )
        with self._lock:
            data = self._load(instance)
            data["extensions"].setdefault(report.instanceId, {})[name] = status.model_dump()
            self._save(instance, data)

    def record_health(self, instance: str, report: reports.HealthReport) -> None:
        with self._lock:
            data = self._load(instance)
            data["health"][report.instanceId] = {
                "state": report.state,
                "time": iso8601(self._clock.now()),
            }
            self._save(instance, data)

    def expected(self, instance: str, instance_id: str) -> list[str] | None:
        with self._lock:
            got: list[str] | None = self._load(instance)["expected"].get(instance_id)
            return got

    def extensions(self, instance: str, instance_id: str) -> list[views.ExtensionStatus]:
        """Statuses for every extension the generation carries, in seed order."""
        with self._lock:
            data = self._load(instance)
        names: list[str] = data["expected"].get(instance_id, [])
        got = data["extensions"].get(instance_id, {})
        out = []
        for n in names:
            if n in got:
                out.append(views.ExtensionStatus(**got[n]))
            else:
                out.append(views.ExtensionStatus(name=n, status="NotStarted"))
        return out

    def application_health(self, instance: str, instance_id: str) -> str | None:
        with self._lock:
            h = self._load(instance)["health"].get(instance_id)
        return None if h is None else str(h["state"])
