"""The health verdict of an instance: running, every extension Succeeded, and
the probe (host side) and application-health extension (guest side) healthy.

Definite failures make it Unhealthy; anything still pending makes it Unknown.
"""

from __future__ import annotations

from hostagent.contract import instancespec, views


def verdict(
    *,
    power_state: str,
    extensions: list[views.ExtensionStatus],
    probe: instancespec.HealthProbe | None,
    probe_healthy: bool | None,
    app_health_expected: bool,
    app_health: str | None,
) -> views.Health:
    bad: list[str] = []
    pending: list[str] = []
    if power_state != "running":
        bad.append(f"power state is {power_state}")
    for e in extensions:
        if e.status == "Failed":
            code = "none" if e.exitCode is None else str(e.exitCode)
            bad.append(f"extension {e.name} failed (exit code {code})")
        elif e.status != "Succeeded":
            pending.append(f"extension {e.name} is {e.status}")
    if probe is not None:
        where = f"{probe.protocol} probe on port {probe.port}"
        if probe_healthy is False:
            bad.append(f"{where} is failing")
        elif probe_healthy is None:
            pending.append(f"{where} has no verdict yet")
    if app_health_expected:
        if app_health == "Unhealthy":
            bad.append("application health reports Unhealthy")
        elif app_health is None:
            pending.append("no application health report yet")
    if bad:
        return views.Health(state="Unhealthy", reasons=bad + pending)
    if pending:
        return views.Health(state="Unknown", reasons=pending)
    return views.Health(state="Healthy")
