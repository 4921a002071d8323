"""Typed libvirt domain XML: frozen dataclasses that write and parse themselves.

Only what kvmss decides about a domain is modelled. Parsing accepts what
libvirt hands back from ``XMLDesc`` for domains we defined (it adds
``<emulator>``, controllers, PCI addresses, aliases, seclabels, KiB memory,
canonical machine names...) and ignores everything it does not model.

No policy lives here (which bus, cache mode or target a disk gets is
:mod:`hostagent.designer`'s business) and no XML is built from strings: every
element goes through :mod:`xml.etree.ElementTree`.

Our own state lives in ``<metadata>`` as ``<kvmss:instance>`` in the
:data:`KVMSS_NS` namespace. libvirt re-serialises that element (and may move
the namespace declaration or change the prefix); it is found again by its
namespace URI, never by its prefix.
"""

from __future__ import annotations

import ipaddress
import os
import re
import uuid as uuidlib
import xml.etree.ElementTree as ET
from dataclasses import dataclass

KVMSS_NS = "https://kvmss.dev/xmlns/instance/1"
KVMSS_PREFIX = "kvmss"
ET.register_namespace(KVMSS_PREFIX, KVMSS_NS)

DOMAIN_TYPES = ("kvm", "qemu", "test")
DISK_BUSES = ("virtio", "sata")
DISK_DEVICES = ("disk", "cdrom")
DISK_FORMATS = ("qcow2", "raw")
DISK_CACHES = ("default", "none", "writethrough", "writeback", "directsync", "unsafe")
DISK_DISCARDS = ("unmap", "ignore")
NIC_MODELS = ("virtio", "e1000", "e1000e", "rtl8139")
ARCHES = ("x86_64",)
CPU_MODES = ("host-passthrough", "host-model")
LIFECYCLE_ACTIONS = ("destroy", "restart", "preserve", "rename-restart")
CRASH_ACTIONS = (*LIFECYCLE_ACTIONS, "coredump-destroy", "coredump-restart")

_MAC_RE = re.compile(r"^[0-9a-f]{2}(?::[0-9a-f]{2}){5}$")
_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
_TARGET_PREFIX = {"virtio": "vd", "sata": "sd"}
_TARGET_RE = re.compile(r"^(vd|sd)[a-z]{1,2}$")
_MACHINE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_BRIDGE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,14}$")
_SERIAL_RE = re.compile(r"^[A-Za-z0-9_ .+-]{1,20}$")

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


def _k(tag: str) -> str:
    """Clark notation for an element or attribute in our metadata namespace."""
    return "{" + KVMSS_NS + "}" + tag


# ---- validation helpers ------------------------------------------------------


def _one_of(field: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ValueError(f"{field} {value!r} is not supported (use one of: {', '.join(allowed)})")


def _absolute(field: str, value: str) -> None:
    if not value or not os.path.isabs(value):
        raise ValueError(f"{field} {value!r} must be an absolute path")


def _optional_absolute(field: str, value: str | None) -> None:
    if value is not None:
        _absolute(field, value)


def _nonempty(field: str, value: str) -> None:
    if not value:
        raise ValueError(f"{field} must not be empty")


def _mac(field: str, value: str) -> None:
    if not _MAC_RE.fullmatch(value):
        raise ValueError(f"{field} {value!r} is not a lowercase MAC address like 52:54:00:12:34:56")


def _boot_triplet(where: str, kernel: str | None, initrd: str | None, cmdline: str | None) -> None:
    _optional_absolute(f"{where} kernel", kernel)
    _optional_absolute(f"{where} initrd", initrd)
    if kernel is None and initrd is not None:
        raise ValueError(f"{where} initrd needs a kernel")
    if kernel is None and cmdline is not None:
        raise ValueError(f"{where} cmdline needs a kernel")
    if cmdline is not None and not cmdline:
        raise ValueError(f"{where} cmdline must not be empty (use None for no cmdline)")


# ---- parsing helpers ----------------------------------------------------------


def _attr(el: ET.Element, name: str, field: str) -> str:
    value = el.get(name)
    if value is None:
        raise ValueError(f"{field}: attribute {name!r} is missing")
    return value


def _int(field: str, text: str | None) -> int:
    if text is None:
        raise ValueError(f"{field} is missing")
    try:
        return int(text.strip())
    except ValueError:
        raise ValueError(f"{field} {text[:40]!r} is not an integer") from None


def _child(el: ET.Element, path: str, field: str) -> ET.Element:
    found = el.find(path)
    if found is None:
        raise ValueError(f"{field}: element <{path}> is missing")
    return found


def _text(el: ET.Element | None) -> str | None:
    if el is None:
        return None
    return el.text or ""


def _sub(parent: ET.Element, tag: str, attrib: dict[str, str] | None = None) -> ET.Element:
    return ET.SubElement(parent, tag, attrib or {})


def _set_optional(el: ET.Element, name: str, value: str | None) -> None:
    if value is not None:
        el.set(name, value)


def _memory_mib(el: ET.Element) -> int:
    unit = el.get("unit", "KiB")
    if unit not in _UNITS:
        raise ValueError(f"memory unit {unit!r} is not known")
    size = _int("memory", el.text) * _UNITS[unit]
    if size % _MIB:
        raise ValueError(f"memory of {size} bytes is not a whole number of MiB")
    return size // _MIB


# ---- metadata -----------------------------------------------------------------


@dataclass(frozen=True)
class ImageRecord:
    """Which image a generation was built from."""

    publisher: str
    offer: str
    sku: str
    version: str
    sha256: str

    def __post_init__(self) -> None:
        for name in ("publisher", "offer", "sku", "version"):
            _nonempty(f"image {name}", getattr(self, name))
        if not _SHA256_RE.fullmatch(self.sha256):
            raise ValueError(f"image sha256 {self.sha256[:80]!r} is not 64 lowercase hex digits")

    def to_element(self) -> ET.Element:
        return ET.Element(
            _k("image"),
            {
                "publisher": self.publisher,
                "offer": self.offer,
                "sku": self.sku,
                "version": self.version,
                "sha256": self.sha256,
            },
        )

    @classmethod
    def from_element(cls, el: ET.Element) -> ImageRecord:
        return cls(
            publisher=_attr(el, "publisher", "image"),
            offer=_attr(el, "offer", "image"),
            sku=_attr(el, "sku", "image"),
            version=_attr(el, "version", "image"),
            sha256=_attr(el, "sha256", "image"),
        )


@dataclass(frozen=True)
class Generation:
    """One OS disk generation of an instance."""

    number: int  # 1, 2, 3... increases at every reimage
    instance_id: str  # the cloud-init instance-id of this generation
    os_disk: str  # absolute path of the qcow2 overlay
    seed: str  # absolute path of the NoCloud seed ISO
    image: ImageRecord
    kernel: str | None = None  # absolute paths for direct kernel boot, None = firmware boot
    initrd: str | None = None
    cmdline: str | None = None

    def __post_init__(self) -> None:
        if self.number < 1:
            raise ValueError(f"generation number {self.number} must be 1 or more")
        _nonempty("generation instance_id", self.instance_id)
        _absolute("generation os_disk", self.os_disk)
        _absolute("generation seed", self.seed)
        _boot_triplet("generation", self.kernel, self.initrd, self.cmdline)

    def to_element(self, role: str) -> ET.Element:
        el = ET.Element(
            _k("generation"),
            {
                "role": role,
                "number": str(self.number),
                "instance-id": self.instance_id,
                "os-disk": self.os_disk,
                "seed": self.seed,
            },
        )
        _set_optional(el, "kernel", self.kernel)
        _set_optional(el, "initrd", self.initrd)
        _set_optional(el, "cmdline", self.cmdline)
        el.append(self.image.to_element())
        return el

    @classmethod
    def from_element(cls, el: ET.Element) -> Generation:
        where = f"generation {el.get('role', '?')}"
        return cls(
            number=_int(f"{where} number", el.get("number")),
            instance_id=_attr(el, "instance-id", where),
            os_disk=_attr(el, "os-disk", where),
            seed=_attr(el, "seed", where),
            image=ImageRecord.from_element(_child(el, _k("image"), where)),
            kernel=el.get("kernel"),
            initrd=el.get("initrd"),
            cmdline=el.get("cmdline"),
        )


@dataclass(frozen=True)
class DataDiskRecord:
    """A data disk the instance owns (kept across every reimage)."""

    lun: int
    size_gb: int
    path: str

    def __post_init__(self) -> None:
        if not 0 <= self.lun <= 15:
            raise ValueError(f"data disk lun {self.lun} is out of range 0-15")
        if self.size_gb < 1:
            raise ValueError(f"data disk lun {self.lun}: size_gb {self.size_gb} must be 1 or more")
        _absolute(f"data disk lun {self.lun} path", self.path)

    def to_element(self) -> ET.Element:
        return ET.Element(
            _k("data-disk"),
            {"lun": str(self.lun), "size-gb": str(self.size_gb), "path": self.path},
        )

    @classmethod
    def from_element(cls, el: ET.Element) -> DataDiskRecord:
        return cls(
            lun=_int("data disk lun", el.get("lun")),
            size_gb=_int("data disk size-gb", el.get("size-gb")),
            path=_attr(el, "path", "data disk"),
        )


@dataclass(frozen=True)
class Metadata:
    """kvmss's own state, kept in the domain's ``<metadata><kvmss:instance>``."""

    instance: str  # instance name
    address: str  # guest IPv4 address, e.g. "10.77.0.5"
    mac: str
    current: Generation
    previous: Generation | None = None
    data_disks: tuple[DataDiskRecord, ...] = ()

    def __post_init__(self) -> None:
        _nonempty("metadata instance", self.instance)
        try:
            ipaddress.IPv4Address(self.address)
        except ValueError:
            raise ValueError(
                f"metadata address {self.address[:40]!r} is not an IPv4 address"
            ) from None
        _mac("metadata mac", self.mac)
        luns = [d.lun for d in self.data_disks]
        if len(set(luns)) != len(luns):
            raise ValueError(f"metadata data_disks: each lun may appear once, got {luns}")

    def to_element(self) -> ET.Element:
        el = ET.Element(
            _k("instance"), {"name": self.instance, "address": self.address, "mac": self.mac}
        )
        el.append(self.current.to_element("current"))
        if self.previous is not None:
            el.append(self.previous.to_element("previous"))
        for disk in self.data_disks:
            el.append(disk.to_element())
        return el

    @classmethod
    def from_element(cls, el: ET.Element) -> Metadata:
        if el.tag != _k("instance"):
            raise ValueError(f"metadata element {el.tag!r} is not {_k('instance')!r}")
        generations: dict[str, Generation] = {}
        for gen_el in el.findall(_k("generation")):
            role = _attr(gen_el, "role", "metadata generation")
            _one_of("metadata generation role", role, ("current", "previous"))
            if role in generations:
                raise ValueError(f"metadata has more than one {role} generation")
            generations[role] = Generation.from_element(gen_el)
        if "current" not in generations:
            raise ValueError("metadata has no current generation")
        return cls(
            instance=_attr(el, "name", "metadata"),
            address=_attr(el, "address", "metadata"),
            mac=_attr(el, "mac", "metadata"),
            current=generations["current"],
            previous=generations.get("previous"),
            data_disks=tuple(DataDiskRecord.from_element(d) for d in el.findall(_k("data-disk"))),
        )


# ---- devices --------------------------------------------------------------------


@dataclass(frozen=True)
class Disk:
    path: str
    target: str  # "vda", "vdb", ..., "sda"
    bus: str  # "virtio" | "sata"
    device: str = "disk"  # "disk" | "cdrom"
    format: str = "qcow2"  # "qcow2" | "raw"
    readonly: bool = False
    serial: str | None = None
    cache: str | None = None  # e.g. "none", "writeback"; None = libvirt default
    discard: str | None = None  # "unmap" | "ignore"; None = libvirt default

    def __post_init__(self) -> None:
        where = f"disk {self.target!r}"
        _absolute(f"{where} path", self.path)
        _one_of(f"{where} bus", self.bus, DISK_BUSES)
        _one_of(f"{where} device", self.device, DISK_DEVICES)
        _one_of(f"{where} format", self.format, DISK_FORMATS)
        if not _TARGET_RE.fullmatch(self.target) or not self.target.startswith(
            _TARGET_PREFIX[self.bus]
        ):
            raise ValueError(
                f"{where} target must be {_TARGET_PREFIX[self.bus]}a, "
                f"{_TARGET_PREFIX[self.bus]}b, ... on bus {self.bus}"
            )
        if self.serial is not None and not _SERIAL_RE.fullmatch(self.serial):
            raise ValueError(
                f"{where} serial {self.serial[:40]!r} must be 1-20 letters, digits, '_', ' ',"
                " '.', '+' or '-'"
            )
        if self.cache is not None:
            _one_of(f"{where} cache", self.cache, DISK_CACHES)
        if self.discard is not None:
            _one_of(f"{where} discard", self.discard, DISK_DISCARDS)

    def to_element(self) -> ET.Element:
        el = ET.Element("disk", {"type": "file", "device": self.device})
        driver = _sub(el, "driver", {"name": "qemu", "type": self.format})
        _set_optional(driver, "cache", self.cache)
        _set_optional(driver, "discard", self.discard)
        _sub(el, "source", {"file": self.path})
        _sub(el, "target", {"dev": self.target, "bus": self.bus})
        if self.serial is not None:
            _sub(el, "serial").text = self.serial
        if self.readonly:
            _sub(el, "readonly")
        return el

    @classmethod
    def from_element(cls, el: ET.Element) -> Disk:
        target = _child(el, "target", "disk")
        dev = _attr(target, "dev", "disk target")
        where = f"disk {dev!r}"
        kind = el.get("type", "file")
        if kind != "file":
            raise ValueError(f"{where} type {kind!r} is not supported (use one of: file)")
        driver = _child(el, "driver", where)
        source = _child(el, "source", where)
        return cls(
            path=_attr(source, "file", f"{where} source"),
            target=dev,
            bus=_attr(target, "bus", f"{where} target"),
            device=el.get("device", "disk"),
            format=_attr(driver, "type", f"{where} driver"),
            readonly=el.find("readonly") is not None,
            serial=_text(el.find("serial")),
            cache=driver.get("cache"),
            discard=driver.get("discard"),
        )


@dataclass(frozen=True)
class Interface:
    bridge: str
    mac: str
    model: str = "virtio"

    def __post_init__(self) -> None:
        if not _BRIDGE_RE.fullmatch(self.bridge):
            raise ValueError(
                f"interface bridge {self.bridge[:40]!r} is not a Linux interface name"
                " (1-15 letters, digits, '.', '_' or '-')"
            )
        _mac("interface mac", self.mac)
        _one_of(f"interface {self.mac} model", self.model, NIC_MODELS)

    def to_element(self) -> ET.Element:
        el = ET.Element("interface", {"type": "bridge"})
        _sub(el, "mac", {"address": self.mac})
        _sub(el, "source", {"bridge": self.bridge})
        _sub(el, "model", {"type": self.model})
        return el

    @classmethod
    def from_element(cls, el: ET.Element) -> Interface:
        kind = el.get("type")
        if kind != "bridge":
            raise ValueError(f"interface type {kind!r} is not supported (use one of: bridge)")
        mac = _attr(_child(el, "mac", "interface"), "address", "interface mac")
        where = f"interface {mac}"
        return cls(
            bridge=_attr(_child(el, "source", where), "bridge", f"{where} source"),
            mac=mac,
            model=_attr(_child(el, "model", where), "type", f"{where} model"),
        )


@dataclass(frozen=True)
class OsBoot:
    arch: str = "x86_64"
    machine: str = "pc"
    kernel: str | None = None  # direct kernel boot; no kernel => <boot dev='hd'/>
    initrd: str | None = None
    cmdline: str | None = None

    def __post_init__(self) -> None:
        _one_of("os arch", self.arch, ARCHES)
        if not _MACHINE_RE.fullmatch(self.machine):
            raise ValueError(f"os machine {self.machine[:40]!r} is not a machine type name")
        _boot_triplet("os", self.kernel, self.initrd, self.cmdline)

    def to_element(self) -> ET.Element:
        el = ET.Element("os")
        _sub(el, "type", {"arch": self.arch, "machine": self.machine}).text = "hvm"
        if self.kernel is None:
            _sub(el, "boot", {"dev": "hd"})
            return el
        _sub(el, "kernel").text = self.kernel
        if self.initrd is not None:
            _sub(el, "initrd").text = self.initrd
        if self.cmdline is not None:
            _sub(el, "cmdline").text = self.cmdline
        return el

    @classmethod
    def from_element(cls, el: ET.Element) -> OsBoot:
        os_type = _child(el, "type", "os")
        if (os_type.text or "").strip() != "hvm":
            raise ValueError(f"os type {os_type.text!r} is not supported (use one of: hvm)")
        return cls(
            arch=_attr(os_type, "arch", "os type"),
            machine=_attr(os_type, "machine", "os type"),
            kernel=_text(el.find("kernel")),
            initrd=_text(el.find("initrd")),
            cmdline=_text(el.find("cmdline")),
        )


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
        _nonempty("domain name", self.name)
        try:
            canonical = str(uuidlib.UUID(self.uuid))
        except ValueError:
            raise ValueError(f"domain uuid {self.uuid[:40]!r} is not a UUID") from None
        if canonical != self.uuid:
            raise ValueError(f"domain uuid {self.uuid!r} must be written as {canonical!r}")
        _one_of("domain type", self.type, DOMAIN_TYPES)
        if self.memory_mib < 1:
            raise ValueError(f"domain memory_mib {self.memory_mib} must be 1 or more")
        if self.vcpus < 1:
            raise ValueError(f"domain vcpus {self.vcpus} must be 1 or more")
        targets = [d.target for d in self.disks]
        if len(set(targets)) != len(targets):
            raise ValueError(f"domain disks: each target may appear once, got {targets}")
        if self.cpu_mode is not None:
            _one_of("domain cpu_mode", self.cpu_mode, CPU_MODES)
        _optional_absolute("domain console_log", self.console_log)
        _one_of("domain on_poweroff", self.on_poweroff, LIFECYCLE_ACTIONS)
        _one_of("domain on_reboot", self.on_reboot, LIFECYCLE_ACTIONS)
        _one_of("domain on_crash", self.on_crash, CRASH_ACTIONS)

    def to_element(self) -> ET.Element:
        el = ET.Element("domain", {"type": self.type})
        _sub(el, "name").text = self.name
        _sub(el, "uuid").text = self.uuid
        if self.metadata is not None:
            _sub(el, "metadata").append(self.metadata.to_element())
        _sub(el, "memory", {"unit": "MiB"}).text = str(self.memory_mib)
        _sub(el, "vcpu").text = str(self.vcpus)
        el.append(self.os.to_element())
        features = _sub(el, "features")
        _sub(features, "acpi")
        _sub(features, "apic")
        if self.cpu_mode is not None:
            _sub(el, "cpu", {"mode": self.cpu_mode})
        _sub(el, "clock", {"offset": "utc"})
        _sub(el, "on_poweroff").text = self.on_poweroff
        _sub(el, "on_reboot").text = self.on_reboot
        _sub(el, "on_crash").text = self.on_crash
        devices = _sub(el, "devices")
        for disk in self.disks:
            devices.append(disk.to_element())
        for nic in self.interfaces:
            devices.append(nic.to_element())
        serial = _sub(devices, "serial", {"type": "pty"})
        if self.console_log is not None:
            _sub(serial, "log", {"file": self.console_log, "append": "on"})
        _sub(devices, "console", {"type": "pty"})
        # No balloon: guests are small and fixed-size, and one device less boots faster.
        _sub(devices, "memballoon", {"model": "none"})
        return el

    @classmethod
    def from_element(cls, el: ET.Element) -> Domain:
        if el.tag != "domain":
            raise ValueError(f"root element <{el.tag}> is not <domain>")
        name = _text(_child(el, "name", "domain")) or ""
        where = f"domain {name!r}"
        meta_el = el.find("metadata/" + _k("instance"))
        devices = el.find("devices")
        disks: tuple[Disk, ...] = ()
        nics: tuple[Interface, ...] = ()
        console_log = None
        if devices is not None:
            disks = tuple(Disk.from_element(d) for d in devices.findall("disk"))
            nics = tuple(Interface.from_element(i) for i in devices.findall("interface"))
            log = devices.find("serial[@type='pty']/log")
            if log is not None:
                console_log = _attr(log, "file", f"{where} serial log")
        cpu = el.find("cpu")
        cpu_mode = cpu.get("mode", "custom") if cpu is not None else None
        if cpu_mode == "custom":
            # A named CPU model is what libvirt fills in when we chose none (qemu64
            # under TCG); the model only records host-passthrough / host-model.
            cpu_mode = None
        return cls(
            name=name,
            uuid=_text(_child(el, "uuid", where)) or "",
            type=_attr(el, "type", where),
            memory_mib=_memory_mib(_child(el, "memory", where)),
            vcpus=_int(f"{where} vcpu", _text(el.find("vcpu"))),
            os=OsBoot.from_element(_child(el, "os", where)),
            disks=disks,
            interfaces=nics,
            metadata=Metadata.from_element(meta_el) if meta_el is not None else None,
            cpu_mode=cpu_mode,
            console_log=console_log,
            on_poweroff=_text(el.find("on_poweroff")) or "destroy",
            on_reboot=_text(el.find("on_reboot")) or "restart",
            on_crash=_text(el.find("on_crash")) or "destroy",
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
