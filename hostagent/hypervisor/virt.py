"""The agent's only door to libvirt.

Domains are read and written as :class:`hostagent.domxml.domain.Domain`; the
persistent (inactive) definition is the source of truth for what the agent
owns (our ``<metadata>`` element whose OS disk lies under this agent's
storage directory), so a restarted agent rebuilds its view from
:meth:`Hypervisor.owned` alone. Several agents may share one libvirtd (labs,
tests): each sees only its own instances, and a name another one holds is a
domain that "is not a kvmss instance" of this agent.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from pathlib import Path

import libvirt

from hostagent.domxml.domain import Domain
from kvmss.base.clock import Clock
from kvmss.base.waiting import wait_until

log = logging.getLogger(__name__)

_STATES = {
    libvirt.VIR_DOMAIN_NOSTATE: "unknown",
    libvirt.VIR_DOMAIN_RUNNING: "running",
    libvirt.VIR_DOMAIN_BLOCKED: "running",
    libvirt.VIR_DOMAIN_PAUSED: "paused",
    libvirt.VIR_DOMAIN_SHUTDOWN: "stopping",
    libvirt.VIR_DOMAIN_SHUTOFF: "stopped",
    libvirt.VIR_DOMAIN_CRASHED: "crashed",
    libvirt.VIR_DOMAIN_PMSUSPENDED: "suspended",
}


class HypervisorError(RuntimeError):
    """A libvirt call failed; the message says which call and libvirt's reason."""


def _quiet_libvirt(_ctx: object, _err: object) -> None:
    # libvirt prints every error to stderr by default; we raise them instead.
    return None


libvirt.registerErrorHandler(_quiet_libvirt, None)


class Hypervisor:
    def __init__(self, uri: str, clock: Clock, storage_root: Path | None = None) -> None:
        self.uri = uri
        self.clock = clock
        # Domains whose OS disk is elsewhere belong to another agent.
        self.storage_root = storage_root
        self._lock = threading.Lock()
        self._conn: libvirt.virConnect | None = None

    # -- connection ----------------------------------------------------------

    def conn(self) -> libvirt.virConnect:
        with self._lock:
            if self._conn is None or not self._conn.isAlive():
                try:
                    self._conn = libvirt.open(self.uri)
                except libvirt.libvirtError as e:
                    raise HypervisorError(f"cannot connect to {self.uri}: {e}") from None
            return self._conn

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                with contextlib.suppress(libvirt.libvirtError):
                    self._conn.close()
                self._conn = None

    def libvirt_version(self) -> str:
        v = self.conn().getLibVersion()
        return f"{v // 1000000}.{v // 1000 % 1000}.{v % 1000}"

    def capacity(self) -> tuple[int, int]:
        """(logical CPUs, memory MiB) of the host."""
        info = self.conn().getInfo()
        return int(info[2]), int(info[1])

    # -- domains -------------------------------------------------------------

    def _dom(self, name: str) -> libvirt.virDomain | None:
        try:
            return self.conn().lookupByName(name)
        except libvirt.libvirtError as e:
            if e.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
                return None
            raise HypervisorError(f"lookup of domain {name}: {e}") from None

    def get(self, name: str) -> Domain | None:
        """The persistent definition of a domain we own, or None."""
        dom = self._dom(name)
        if dom is None:
            return None
        try:
            d = Domain.from_xml(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE))
        except ValueError as e:  # not one we defined (as in owned())
            log.debug("domain %s is not ours: %s", name, e)
            return None
        return d if self._ours(d) else None

    def _ours(self, d: Domain) -> bool:
        if d.metadata is None:
            return False
        if self.storage_root is None:
            return True
        return Path(d.metadata.current.os_disk).is_relative_to(self.storage_root)

    def owned(self) -> list[Domain]:
        out = []
        for dom in self.conn().listAllDomains(libvirt.VIR_CONNECT_LIST_DOMAINS_PERSISTENT):
            try:
                d = Domain.from_xml(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE))
            except (ValueError, libvirt.libvirtError) as e:
                log.debug("skipping domain %s: %s", dom.name(), e)
                continue
            if self._ours(d):
                out.append(d)
        return out

    def define(self, domain: Domain) -> None:
        try:
            self.conn().defineXML(domain.to_xml())
        except libvirt.libvirtError as e:
            raise HypervisorError(f"defining domain {domain.name}: {e}") from None

    def state(self, name: str) -> str:
        dom = self._dom(name)
        if dom is None:
            return "absent"
        try:
            st, _reason = dom.state()
        except libvirt.libvirtError:
            return "unknown"
        return _STATES.get(st, "unknown")

    def is_running(self, name: str) -> bool:
        dom = self._dom(name)
        return bool(dom is not None and dom.isActive())

    def start(self, name: str) -> None:
        dom = self._dom(name)
        if dom is None:
            raise HypervisorError(f"domain {name} is not defined")
        if dom.isActive():
            return
        try:
            dom.create()
        except libvirt.libvirtError as e:
            raise HypervisorError(f"starting domain {name}: {e}") from None

    def stop(self, name: str, timeout: float) -> bool:
        """ACPI power-off, then a hard stop after ``timeout`` seconds.

        Returns True when the guest shut down by itself."""
        dom = self._dom(name)
        if dom is None or not dom.isActive():
            return True
        try:
            dom.shutdown()
        except libvirt.libvirtError as e:
            log.info("ACPI shutdown of %s refused (%s); forcing it off", name, e)
        if wait_until(self.clock, lambda: not dom.isActive(), timeout=timeout, interval=0.25):
            return True
        log.warning("%s did not shut down within %.0fs; forcing it off", name, timeout)
        try:
            dom.destroy()
        except libvirt.libvirtError as e:
            if dom.isActive():
                raise HypervisorError(f"stopping domain {name}: {e}") from None
        return False

    def undefine(self, name: str) -> None:
        dom = self._dom(name)
        if dom is None:
            return
        try:
            if dom.isActive():
                dom.destroy()
            dom.undefineFlags(libvirt.VIR_DOMAIN_UNDEFINE_MANAGED_SAVE)
        except libvirt.libvirtError as e:
            raise HypervisorError(f"removing domain {name}: {e}") from None


def disk_free_gb(path: str) -> float:
    st = os.statvfs(path)
    return round(st.f_bavail * st.f_frsize / 2**30, 2)
