"""The devices of a libvirt domain that kvmss decides (disks, bridged
interfaces) and how it boots (``<os>``), as frozen dataclasses that write
and parse themselves.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass

from hostagent.domxml.fields import (
    absolute,
    attr,
    boot_triplet,
    check_mac,
    child,
    one_of,
    set_optional,
    sub,
    text_of,
)

DISK_BUSES = ("virtio", "sata")
DISK_DEVICES = ("disk", "cdrom")
DISK_FORMATS = ("qcow2", "raw")
DISK_CACHES = ("default", "none", "writethrough", "writeback", "directsync", "unsafe")
DISK_DISCARDS = ("unmap", "ignore")
NIC_MODELS = ("virtio", "e1000", "e1000e", "rtl8139")
ARCHES = ("x86_64",)

_TARGET_PREFIX = {"virtio": "vd", "sata": "sd"}
_TARGET_RE = re.compile(r"^(vd|sd)[a-z]{1,2}$")
_MACHINE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_BRIDGE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,14}$")
_SERIAL_RE = re.compile(r"^[A-Za-z0-9_ .+-]{1,20}$")


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
        absolute(f"{where} path", self.path)
        one_of(f"{where} bus", self.bus, DISK_BUSES)
        one_of(f"{where} device", self.device, DISK_DEVICES)
        one_of(f"{where} format", self.format, DISK_FORMATS)
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
            one_of(f"{where} cache", self.cache, DISK_CACHES)
        if self.discard is not None:
            one_of(f"{where} discard", self.discard, DISK_DISCARDS)

    def to_element(self) -> ET.Element:
        el = ET.Element("disk", {"type": "file", "device": self.device})
        driver = sub(el, "driver", {"name": "qemu", "type": self.format})
        set_optional(driver, "cache", self.cache)
        set_optional(driver, "discard", self.discard)
        sub(el, "source", {"file": self.path})
        sub(el, "target", {"dev": self.target, "bus": self.bus})
        if self.serial is not None:
            sub(el, "serial").text = self.serial
        if self.readonly:
            sub(el, "readonly")
        return el

    @classmethod
    def from_element(cls, el: ET.Element) -> Disk:
        target = child(el, "target", "disk")
        dev = attr(target, "dev", "disk target")
        where = f"disk {dev!r}"
        kind = el.get("type", "file")
        if kind != "file":
            raise ValueError(f"{where} type {kind!r} is not supported (use one of: file)")
        driver = child(el, "driver", where)
        source = child(el, "source", where)
        return cls(
            path=attr(source, "file", f"{where} source"),
            target=dev,
            bus=attr(target, "bus", f"{where} target"),
            device=el.get("device", "disk"),
            format=attr(driver, "type", f"{where} driver"),
            readonly=el.find("readonly") is not None,
            serial=text_of(el.find("serial")),
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
        check_mac("interface mac", self.mac)
        one_of(f"interface {self.mac} model", self.model, NIC_MODELS)

    def to_element(self) -> ET.Element:
        el = ET.Element("interface", {"type": "bridge"})
        sub(el, "mac", {"address": self.mac})
        sub(el, "source", {"bridge": self.bridge})
        sub(el, "model", {"type": self.model})
        return el

    @classmethod
    def from_element(cls, el: ET.Element) -> Interface:
        kind = el.get("type")
        if kind != "bridge":
            raise ValueError(f"interface type {kind!r} is not supported (use one of: bridge)")
        mac = attr(child(el, "mac", "interface"), "address", "interface mac")
        where = f"interface {mac}"
        return cls(
            bridge=attr(child(el, "source", where), "bridge", f"{where} source"),
            mac=mac,
            model=attr(child(el, "model", where), "type", f"{where} model"),
        )


@dataclass(frozen=True)
class OsBoot:
    arch: str = "x86_64"
    machine: str = "pc"
    kernel: str | None = None  # direct kernel boot; no kernel => <boot dev='hd'/>
    initrd: str | None = None
    cmdline: str | None = None

    def __post_init__(self) -> None:
        one_of("os arch", self.arch, ARCHES)
        if not _MACHINE_RE.fullmatch(self.machine):
            raise ValueError(f"os machine {self.machine[:40]!r} is not a machine type name")
        boot_triplet("os", self.kernel, self.initrd, self.cmdline)

    def to_element(self) -> ET.Element:
        el = ET.Element("os")
        sub(el, "type", {"arch": self.arch, "machine": self.machine}).text = "hvm"
        if self.kernel is None:
            sub(el, "boot", {"dev": "hd"})
            return el
        sub(el, "kernel").text = self.kernel
        if self.initrd is not None:
            sub(el, "initrd").text = self.initrd
        if self.cmdline is not None:
            sub(el, "cmdline").text = self.cmdline
        return el

    @classmethod
    def from_element(cls, el: ET.Element) -> OsBoot:
        os_type = child(el, "type", "os")
        if (os_type.text or "").strip() != "hvm":
            raise ValueError(f"os type {os_type.text!r} is not supported (use one of: hvm)")
        return cls(
            arch=attr(os_type, "arch", "os type"),
            machine=attr(os_type, "machine", "os type"),
            kernel=text_of(el.find("kernel")),
            initrd=text_of(el.find("initrd")),
            cmdline=text_of(el.find("cmdline")),
        )
