"""Typed libvirt domain XML: frozen dataclasses that write and parse themselves.

Only what kvmss decides about a domain is modelled. Parsing accepts what
libvirt hands back from ``XMLDesc`` for domains we defined (it adds
``<emulator>``, controllers, PCI addresses, aliases, seclabels, KiB memory,
canonical machine names...) and ignores everything it does not model.

No policy lives here (that is the designer's) and no XML is built from
strings: every element goes through :mod:`xml.etree.ElementTree`.

libvirt re-serialises our ``<metadata>`` element (and may move the namespace
declaration or change the prefix), so it is found by its namespace URI,
never by its prefix.
"""

from __future__ import annotations

import uuid as uuidlib
import xml.etree.ElementTree as ET
from dataclasses import dataclass

from hostagent.domxml.devices import Disk, Interface, OsBoot
from hostagent.domxml.fields import (
    attr,
    child,
    int_of,
    nonempty,
    one_of,
    optional_absolute,
    sub,
    text_of,
)
from hostagent.domxml.metadata import Metadata, kvmss_tag

DOMAIN_TYPES = ("kvm", "qemu", "test")
CPU_MODES = ("host-passthrough", "host-model")
LIFECYCLE_ACTIONS = ("destroy", "restart", "preserve", "rename-restart")
CRASH_ACTIONS = (*LIFECYCLE_ACTIONS, "coredump-destroy", "coredump-restart")

# libvirt's scaled-integer units (docs: formatdomain "Memory Allocation").
_UNITS = {
    "b": 1,
    "bytes": 1,
    "KB": 10**3,
    "k": 2**10,
    "KiB": 2**10,
    "MB": 10**6,
    "M": 2**20,
    "MiB": 2**20,
    "GB": 10**9,
    "G": 2**30,
    "GiB": 2**30,
    "TB": 10**12,
    "T": 2**40,
    "TiB": 2**40,
}
_MIB = 2**20


def _memory_mib(el: ET.Element) -> int:
    unit = el.get("unit", "KiB")
    if unit not in _UNITS:
        raise ValueError(f"memory unit {unit!r} is not known")
    size = int_of("memory", el.text) * _UNITS[unit]
    if size % _MIB:
        raise ValueError(f"memory of {size} bytes is not a whole number of MiB")
    return size // _MIB


# ---- the domain -------------------------------------------------------------------


@dataclass(frozen=True)
class Domain:
    name: str
    uuid: str
    type: str  # "kvm" | "qemu" | "test"
    memory_mib: int
    vcpus: int
    os: OsBoot
    disks: tuple[Disk, ...]
    interfaces: tuple[Interface, ...]
    metadata: Metadata | None = None
    cpu_mode: str | None = None  # "host-passthrough" on kvm, None on tcg
    console_log: str | None = None  # serial pty logged to this file via <log file=.../>
    on_poweroff: str = "destroy"
    on_reboot: str = "restart"
    on_crash: str = "destroy"

    def __post_init__(self) -> None:
        nonempty("domain name", self.name)
        try:
            canonical = str(uuidlib.UUID(self.uuid))
        except ValueError:
            raise ValueError(f"domain uuid {self.uuid[:40]!r} is not a UUID") from None
        if canonical != self.uuid:
            raise ValueError(f"domain uuid {self.uuid!r} must be written as {canonical!r}")
        one_of("domain type", self.type, DOMAIN_TYPES)
        if self.memory_mib < 1:
            raise ValueError(f"domain memory_mib {self.memory_mib} must be 1 or more")
        if self.vcpus < 1:
            raise ValueError(f"domain vcpus {self.vcpus} must be 1 or more")
        targets = [d.target for d in self.disks]
        if len(set(targets)) != len(targets):
            raise ValueError(f"domain disks: each target may appear once, got {targets}")
        if self.cpu_mode is not None:
            one_of("domain cpu_mode", self.cpu_mode, CPU_MODES)
        optional_absolute("domain console_log", self.console_log)
        one_of("domain on_poweroff", self.on_poweroff, LIFECYCLE_ACTIONS)
        one_of("domain on_reboot", self.on_reboot, LIFECYCLE_ACTIONS)
        one_of("domain on_crash", self.on_crash, CRASH_ACTIONS)

    def to_element(self) -> ET.Element:
        el = ET.Element("domain", {"type": self.type})
        sub(el, "name").text = self.name
        sub(el, "uuid").text = self.uuid
        if self.metadata is not None:
            sub(el, "metadata").append(self.metadata.to_element())
        sub(el, "memory", {"unit": "MiB"}).text = str(self.memory_mib)
        sub(el, "vcpu").text = str(self.vcpus)
        el.append(self.os.to_element())
        features = sub(el, "features")
        sub(features, "acpi")
        sub(features, "apic")
        if self.cpu_mode is not None:
            sub(el, "cpu", {"mode": self.cpu_mode})
        sub(el, "clock", {"offset": "utc"})
        sub(el, "on_poweroff").text = self.on_poweroff
        sub(el, "on_reboot").text = self.on_reboot
        sub(el, "on_crash").text = self.on_crash
        devices = sub(el, "devices")
        for disk in self.disks:
            devices.append(disk.to_element())
        for nic in self.interfaces:
            devices.append(nic.to_element())
        serial = sub(devices, "serial", {"type": "pty"})
        if self.console_log is not None:
            sub(serial, "log", {"file": self.console_log, "append": "on"})
        sub(devices, "console", {"type": "pty"})
        # No balloon: guests are small and fixed-size, and one device less boots faster.
        sub(devices, "memballoon", {"model": "none"})
        return el

    @classmethod
    def from_element(cls, el: ET.Element) -> Domain:
        if el.tag != "domain":
            raise ValueError(f"root element <{el.tag}> is not <domain>")
        name = text_of(child(el, "name", "domain")) or ""
        where = f"domain {name!r}"
        meta_el = el.find("metadata/" + kvmss_tag("instance"))
        devices = el.find("devices")
        disks: tuple[Disk, ...] = ()
        nics: tuple[Interface, ...] = ()
        console_log = None
        if devices is not None:
            disks = tuple(Disk.from_element(d) for d in devices.findall("disk"))
            nics = tuple(Interface.from_element(i) for i in devices.findall("interface"))
            log = devices.find("serial[@type='pty']/log")
            if log is not None:
                console_log = attr(log, "file", f"{where} serial log")
        cpu = el.find("cpu")
        cpu_mode = cpu.get("mode", "custom") if cpu is not None else None
        if cpu_mode == "custom":
            # A named CPU model is what libvirt fills in when we chose none (qemu64
            # under TCG); the model only records host-passthrough / host-model.
            cpu_mode = None
        return cls(
            name=name,
            uuid=text_of(child(el, "uuid", where)) or "",
            type=attr(el, "type", where),
            memory_mib=_memory_mib(child(el, "memory", where)),
            vcpus=int_of(f"{where} vcpu", text_of(el.find("vcpu"))),
            os=OsBoot.from_element(child(el, "os", where)),
            disks=disks,
            interfaces=nics,
            metadata=Metadata.from_element(meta_el) if meta_el is not None else None,
            cpu_mode=cpu_mode,
            console_log=console_log,
            on_poweroff=text_of(el.find("on_poweroff")) or "destroy",
            on_reboot=text_of(el.find("on_reboot")) or "restart",
            on_crash=text_of(el.find("on_crash")) or "destroy",
        )

    def to_xml(self) -> str:
        """The domain as indented XML text (no trailing newline)."""
        el = self.to_element()
        ET.indent(el, space="  ")
        return ET.tostring(el, encoding="unicode")

    @classmethod
    def from_xml(cls, xml: str) -> Domain:
        """Parse a domain we generated or libvirt's ``XMLDesc`` of one.

        Raises ValueError for XML that is not well formed or a domain that
        uses something this model does not support."""
        try:
            el = ET.fromstring(xml)
        except ET.ParseError as e:
            raise ValueError(f"domain XML is not well formed: {e}") from None
        return cls.from_element(el)
